"""Campaign audiences: whom a campaign contacts tonight, whom it holds out as its control group, and whom
it leaves out and why.

A campaign is one YAML file in `conf/campaigns/` (its name is the file's name): a description, an
`audience` condition over the customer view (`VIEW_COLUMNS`), a channel, an optional offer, a priority, an
optional cap on its size with the order that decides who is in, and the share held out as a control group.
Marketing edits these files, so their expressions are data, not code: `load_campaigns` refuses an unknown
field, a bad value, or an `audience` or `order_by` with anything but the columns, operators and pure
functions `models.campaign_sql` allows, naming the file, the field and the part; the campaign then holds
the expressions as re-rendered from the checked parse, which is all Spark ever sees. `check_expressions`
also asks Spark whether it can evaluate them on the night's view (types).

Each night, for each campaign in priority order, every customer who meets its condition is either
- `suppressed`, with the first reason that applies: `unsubscribed` (no marketing consent), `consent_unknown`
  (the shop does not record the customer's consent and `campaigns.consent_when_missing` is unknown), `no_email`
  (an e-mail campaign without an address), `open_inquiry` (support has an unresolved inquiry of theirs),
  `contacted_recently` (in the treatment group of any campaign within `cooldown_days` before the run date),
  `other_campaign` (taken tonight by a campaign of higher priority: at most one campaign per customer and
  night), `audience_limit` (beyond `max_audience` in the campaign's order); or
- in its `control` group (not contacted, to measure the campaign by) or its `treatment` group.

Control or treatment follows from a hash of the campaign's and the customer's ids alone, so a customer's
group never changes from one night to the next, and a new customer does not move anyone else.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType

from core.crm_schema import CRM_NAMES
from core.feature_schema import ACTIVITY_COLUMNS, FEATURES
from models.campaign_sql import ExpressionError, checked_sql

CHANNELS = ("email", "sms", "push", "any")
GROUPS = ("treatment", "control", "suppressed")
#: Why an eligible customer is not contacted, in the order they are checked.
SUPPRESSION_REASONS = (
    "unsubscribed",
    "consent_unknown",
    "no_email",
    "open_inquiry",
    "contacted_recently",
    "other_campaign",
    "audience_limit",
)
NAME = re.compile(r"[a-z][a-z0-9_]{0,59}")
#: Buckets of the control-group hash: a customer is in the control group when its bucket < share x BUCKETS.
BUCKETS = 10_000
#: `campaigns.consent_when_missing`: how a customer whose consent the shop does not record is treated.
CONSENT_WHEN_MISSING = ("unknown", "granted", "denied")


_FEATURE_TYPES = {feature.name: feature.type for feature in FEATURES}
#: The customer view (`jobs.campaigns.customer_view`) that `audience` and `order_by` read: its columns and
#: their Spark types, in its order. Campaign files are checked against it when loaded, without Spark; a test
#: checks that the view built from the lake has exactly these columns.
VIEW_COLUMNS: dict[str, str] = {
    # the customer features (their star-rating satisfaction_score is left out: the view's is the model's)
    **{name: kind for name, kind in _FEATURE_TYPES.items() if name not in ("as_of", "satisfaction_score")},
    # purchase_count and total_spent under their customer_segments names
    **{crm: _FEATURE_TYPES[measure] for measure, crm in CRM_NAMES["customer_segments"].items()},
    "segment": "string",
    "previous_segment": "string",
    "segment_since": "date",
    "rfm_code": "string",
    "r_score": "int",
    "f_score": "int",
    "m_score": "int",
    "cluster_id": "int",
    "churn_probability": "double",
    "churn_risk": "string",
    "p_alive": "double",
    "expected_orders_30d": "double",
    "expected_orders_90d": "double",
    "expected_orders_365d": "double",
    "expected_order_value": "decimal(18,2)",
    "clv_12m": "decimal(18,2)",
    "next_order_date": "date",
    "language": "string",
    "country": "string",
    "accepts_marketing": "boolean",
    "has_email": "boolean",
    "registered_at": "timestamp",
    "clv_12m_rank": "double",
    "satisfaction_score": "double",
    "likely_category": "string",
    "likely_category_probability": "double",
    "offered_coupon": "string",
    "expected_uplift": "double",
    # the browsing activity not already among the features
    **{name: kind for name, kind, _ in ACTIVITY_COLUMNS if name not in _FEATURE_TYPES},
    "run_date": "date",
}
DIRECTIONS = ("asc", "desc")


class CampaignError(ValueError):
    """A campaign file is invalid; the message names the file and the field."""


class Campaign(BaseModel):
    """One campaign, as written in `conf/campaigns/<name>.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the file's name without .yaml: lower-case letters, digits and _")
    description: str = Field(min_length=1, description="what the campaign is for, in words")
    audience: str = Field(min_length=1, description="who qualifies: a condition over the customer view's columns (docs/campaigns.md)")
    channel: str = Field("email", description=f"how it reaches the customer: one of {', '.join(CHANNELS)}")
    offer: str | None = Field(None, description="what it offers (a coupon code, a message id), passed on to the export")
    priority: int = Field(100, ge=0, description="lower goes first when a customer qualifies for several campaigns")
    order_by: list[str] = Field(
        default_factory=lambda: ["clv_12m desc"],
        validate_default=True,
        description="who is in first when max_audience cuts: expressions, each optionally followed by asc or desc (nulls last)",
    )
    max_audience: int | None = Field(
        None, ge=1, description="most customers contacted per night (treatment and control together); none: no cap"
    )
    control_share: float = Field(0.1, ge=0.0, le=0.5, description="share held out as the control group, 0-0.5")
    enabled: bool = Field(True, description="false: the campaign is skipped")

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, channel: str) -> str:
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}")
        return channel

    @field_validator("audience")
    @classmethod
    def _allowed_audience(cls, audience: str) -> str:
        """The condition as checked and re-rendered (`models.campaign_sql`): what Spark will run."""
        try:
            return checked_sql(audience, VIEW_COLUMNS, condition=True)
        except ExpressionError as error:
            raise PydanticCustomError("campaign_expression", "audience: {reason}", {"reason": str(error)}) from None

    @field_validator("order_by")
    @classmethod
    def _allowed_order(cls, order_by: list[str]) -> list[str]:
        """Each item as `<checked, re-rendered expression> asc|desc`."""
        items = []
        for index, item in enumerate(order_by):
            expression, direction = _split_direction(item)
            try:
                items.append(f"{checked_sql(expression, VIEW_COLUMNS)} {direction}")
            except ExpressionError as error:
                raise PydanticCustomError(
                    "campaign_expression", "order_by[{index}]: {reason}", {"index": index, "reason": str(error)}
                ) from None
        return items

    def sort_columns(self) -> list[Column]:
        """`order_by` as Spark sort columns (nulls last), then the customer id so that ties are stable."""
        columns = []
        for item in self.order_by:
            expression, direction = _split_direction(item)
            column = F.expr(expression)
            columns.append(column.desc_nulls_last() if direction == "desc" else column.asc_nulls_last())
        return [*columns, F.col("customer_id").asc()]


def _split_direction(item: str) -> tuple[str, str]:
    """`clv_12m desc` -> (`clv_12m`, `desc`); without a direction, ascending."""
    expression, _, direction = item.strip().rpartition(" ")
    if direction.lower() in DIRECTIONS and expression.strip():
        return expression.strip(), direction.lower()
    return item.strip(), "asc"


def load_campaigns(folder: Path) -> list[Campaign]:
    """The enabled campaigns of `folder` (`*.yaml`), in priority order (then by name); the first bad file raises."""
    campaigns = [load_campaign(path) for path in sorted(Path(folder).glob("*.yaml"))]
    return sorted((c for c in campaigns if c.enabled), key=lambda c: (c.priority, c.name))


def check_campaign_files(folder: Path) -> tuple[list[Path], list[str]]:
    """Every campaign file of `folder` loaded and checked, without Spark: the good files and, for each bad
    one, its message (file, field, part). `crm campaigns check` and `crm doctor` report these."""
    good, problems = [], []
    for path in sorted(Path(folder).glob("*.yaml")):
        try:
            load_campaign(path)
        except CampaignError as error:
            problems.append(str(error))
        else:
            good.append(path)
    return good, problems


def load_campaign(path: Path) -> Campaign:
    """One campaign file, checked: known fields with values of the right kind."""
    where = str(path)
    name = Path(path).stem
    if not NAME.fullmatch(name):
        raise CampaignError(
            f"{where}: the file name {name!r} is the campaign's name; expected lower-case letters, digits and _, starting with a letter"
        )
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise CampaignError(f"{where}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise CampaignError(f"{where}: expected a mapping of fields ({', '.join(_fields())}), got {type(data).__name__}")
    if "name" in data:
        raise CampaignError(f"{where}: name: the campaign's name is its file's name ({name}); leave the field out")
    try:
        return Campaign(name=name, **data)
    except ValidationError as error:
        raise CampaignError(f"{where}: " + "; ".join(_problem(problem) for problem in error.errors())) from None


def _fields() -> list[str]:
    return [field for field in Campaign.model_fields if field != "name"]


def _problem(problem: dict) -> str:
    field = ".".join(str(part) for part in problem["loc"]) or "(file)"
    if problem["type"] == "extra_forbidden":
        hint = difflib.get_close_matches(str(problem["loc"][0]), _fields(), n=1)
        return f"{field}: unknown field" + (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; expected one of {', '.join(_fields())}"
    if problem["type"] == "campaign_expression":  # names its field and the part itself
        return problem["msg"]
    if problem["type"] == "missing":
        return f"{field}: missing; {Campaign.model_fields[field].description}"
    message = problem["msg"].removeprefix("Value error, ")
    return f"{field}: {message} (got {problem.get('input')!r})"


def check_expressions(campaign: Campaign, view: DataFrame, where: str) -> None:
    """Refuse an `audience` or `order_by` (already allowed at load) that Spark cannot evaluate on the customer
    view, e.g. a condition that compares a text with a date; names the field and Spark's reason."""

    def fail(field: str, reason: str) -> None:
        raise CampaignError(f"{where}: {field}: {reason}; expected a condition over the customer view's columns: {', '.join(view.columns)}")

    try:
        kind = view.select(F.expr(campaign.audience).alias("audience")).schema["audience"].dataType
    except (AnalysisException, ParseException) as error:
        fail("audience", _first_line(error))
    if not isinstance(kind, BooleanType):
        fail("audience", f"{campaign.audience!r} is {kind.simpleString()}, not a condition (true or false)")
    for index, item in enumerate(campaign.order_by):
        try:
            view.orderBy(*campaign.sort_columns()[index : index + 1]).schema
        except (AnalysisException, ParseException) as error:
            fail(f"order_by[{index}]", _first_line(error))


def _first_line(error: Exception) -> str:
    text = getattr(error, "getMessage", lambda: str(error))()
    return " ".join(text.strip().splitlines()[0].split()) if text.strip() else type(error).__name__


def control_bucket(campaign: str, customer_id: int) -> int:
    """The customer's bucket (0 to BUCKETS - 1) for `campaign`: the same on every night and machine."""
    digest = hashlib.sha256(f"{campaign}:{customer_id}".encode()).hexdigest()
    return int(digest[:15], 16) % BUCKETS


def control_bucket_column(campaign: str) -> Column:
    """`control_bucket` as a Spark column over `customer_id` (the same numbers)."""
    digest = F.sha2(F.concat(F.lit(f"{campaign}:"), F.col("customer_id").cast("string")), 256)
    return (F.conv(F.substring(digest, 1, 15), 16, 10).cast("decimal(20,0)") % F.lit(BUCKETS)).cast("int")


@dataclass(frozen=True)
class Suppression:
    """What the night knows beyond the view: who was contacted lately."""

    contacted_recently: DataFrame  # customer_id: in some campaign's treatment group within the cooldown
    consent_when_missing: str = "unknown"  # accepts_marketing null: unknown (consent_unknown), granted or denied


def consent_reason(consent_when_missing: str) -> Column:
    """The consent suppression of a customer (`accepts_marketing`), null when they may be contacted: false is
    `unsubscribed`; null (the shop does not say) as `consent_when_missing` says."""
    if consent_when_missing not in CONSENT_WHEN_MISSING:
        raise ValueError(f"campaigns.consent_when_missing: {consent_when_missing!r}; expected one of {', '.join(CONSENT_WHEN_MISSING)}")
    consent = F.col("accepts_marketing")
    unsubscribed = F.when(consent == F.lit(False), F.lit("unsubscribed"))
    if consent_when_missing == "granted":
        return unsubscribed
    return unsubscribed.when(consent.isNull(), F.lit("consent_unknown" if consent_when_missing == "unknown" else "unsubscribed"))


def audiences(view: DataFrame, campaigns: list[Campaign], suppression: Suppression) -> DataFrame:
    """Every campaign's eligible customers with their group and, for the suppressed, the reason.

    Columns: campaign, customer_id, audience_group, suppression_reason, audience_rank (position in the
    campaign's order among those not suppressed before the cap; null for the others), channel, offer.
    """
    recent = suppression.contacted_recently.select("customer_id").distinct().withColumn("_recent", F.lit(True))
    customers = view.join(recent, "customer_id", "left").cache()
    consent = consent_reason(suppression.consent_when_missing)
    taken = None  # customers in a higher-priority campaign's treatment or control group tonight
    parts = []
    for campaign in campaigns:
        eligible = customers.where(F.expr(campaign.audience))
        if taken is not None:
            eligible = eligible.join(taken.withColumn("_taken", F.lit(True)), "customer_id", "left")
        else:
            eligible = eligible.withColumn("_taken", F.lit(False))
        reason = (
            F.when(consent.isNotNull(), consent)
            .when(F.lit(campaign.channel == "email") & ~F.col("has_email"), F.lit("no_email"))
            .when(F.coalesce(F.col("open_inquiries"), F.lit(0)) > 0, F.lit("open_inquiry"))
            .when(F.coalesce(F.col("_recent"), F.lit(False)), F.lit("contacted_recently"))
            .when(F.coalesce(F.col("_taken"), F.lit(False)), F.lit("other_campaign"))
        )
        ranked = eligible.withColumn("suppression_reason", reason)
        in_order = Window.partitionBy(F.col("suppression_reason").isNull()).orderBy(*campaign.sort_columns())
        ranked = ranked.withColumn("audience_rank", F.when(F.col("suppression_reason").isNull(), F.row_number().over(in_order)))
        if campaign.max_audience is not None:
            ranked = ranked.withColumn(
                "suppression_reason",
                F.when(F.col("audience_rank") > campaign.max_audience, F.lit("audience_limit")).otherwise(F.col("suppression_reason")),
            )
        held_out = control_bucket_column(campaign.name) < F.lit(int(round(campaign.control_share * BUCKETS)))
        rows = ranked.select(
            F.lit(campaign.name).alias("campaign"),
            "customer_id",
            F.when(F.col("suppression_reason").isNotNull(), F.lit("suppressed"))
            .when(held_out, F.lit("control"))
            .otherwise(F.lit("treatment"))
            .alias("audience_group"),
            "suppression_reason",
            F.when(F.col("suppression_reason").isNull(), F.col("audience_rank")).alias("audience_rank"),
            F.lit(campaign.channel).alias("channel"),
            F.lit(campaign.offer).cast("string").alias("offer"),
        ).cache()
        parts.append(rows)
        chosen = rows.where(F.col("audience_group") != "suppressed").select("customer_id")
        taken = chosen if taken is None else taken.unionByName(chosen)
    if not parts:
        return None
    result = parts[0]
    for part in parts[1:]:
        result = result.unionByName(part)
    return result
