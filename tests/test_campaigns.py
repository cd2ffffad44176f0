"""Campaign audiences: files checked with errors naming the file and field; expressions that are data, not
code (refused at load unless made of the view's columns, operators and allowed functions); who is contacted,
held out or suppressed and why; a control group that never moves."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from models.campaigns import (
    BUCKETS,
    VIEW_COLUMNS,
    Campaign,
    CampaignError,
    Suppression,
    audiences,
    check_campaign_files,
    check_expressions,
    control_bucket,
    control_bucket_column,
    load_campaign,
    load_campaigns,
)

REPO_CAMPAIGNS = Path(__file__).resolve().parent.parent / "conf" / "campaigns"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_campaigns_load_in_priority_order():
    names = [campaign.name for campaign in load_campaigns(REPO_CAMPAIGNS)]
    assert names == ["win_back", "cart_reminder", "browse_abandonment", "vip", "new_customer_nurture"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "description: d\naudiance: frequency > 1\n",
            r"audiance: unknown field \(did you mean 'audience'\?\); expected one of description, audience,",
        ),
        ("description: d\n", r"audience: missing; who qualifies"),
        (
            "description: d\naudience: frequency > 1\nchannel: fax\n",
            r"channel: unknown channel 'fax'; expected one of email, sms, push, any \(got 'fax'\)",
        ),
        ("description: d\naudience: frequency > 1\ncontrol_share: 0.9\n", r"control_share: .*less than or equal to 0.5"),
        ("description: d\naudience: frequency > 1\nname: other\n", r"name: the campaign's name is its file's name"),
        ("- a list\n", r"expected a mapping of fields"),
    ],
)
def test_a_bad_campaign_file_names_the_file_and_the_field(tmp_path, text, message):
    path = write(tmp_path, "spring_sale", text)
    with pytest.raises(CampaignError, match=rf"^{path}: .*{message}"):
        load_campaign(path)


def test_a_campaign_file_name_must_be_a_plain_name(tmp_path):
    path = write(tmp_path, "Spring Sale", "description: d\naudience: frequency > 1\n")
    with pytest.raises(CampaignError, match=r"the file name 'Spring Sale' is the campaign's name"):
        load_campaign(path)


@pytest.mark.parametrize(
    ("audience", "message"),
    [
        # what a campaign file must never do: read files, read the environment, stop the JVM, run code
        ("(SELECT count(*) FROM text.`/etc/passwd`) > 0", r"subqueries are not allowed \(\(SELECT COUNT\(\*\) FROM text"),
        (
            "reflect('java.lang.System', 'getenv', 'CRM_SHOP_URL') IS NOT NULL",
            r"function reflect is not allowed \(allowed: abs, round, .*, dayofweek\)",
        ),
        ("java_method('java.lang.System', 'exit', 1) = 0", r"function java_method is not allowed \(allowed: abs,"),
        ("my_udf(frequency) > 1", r"function my_udf is not allowed"),
        ("/*+ BROADCAST(customers) */ frequency > 1", r"hints are not allowed"),
        ("frequency > 1; DROP TABLE customers", r"';' is not allowed: one expression, not statements"),
        ("frequency IN (SELECT customer_id FROM delta.`/data/lake/gold/customer_profile`)", r"IN takes a list of values, not a query"),
        ("customer_profile.email LIKE '%@example.com'", r"customer_profile.email: name a column of the customer view alone"),
        (
            "email LIKE '%@example.com'",
            r"unknown column email \(did you mean has_email\?\); the customer view's columns: customer_id, recency_days,",
        ),
        ("substring('${env:CRM_SHOP_URL}', 1, 1) = 'p'", r"'\$\{' is not allowed in a string"),
        # the same, spelt so that only after sqlglot decodes the escape does it read ${ (Spark would expand it)
        ("substring('\\u0024{env:CRM_SHOP_URL}', 1, 1) = 'p'", r"'\$\{' is not allowed in a string"),
        ("filter(array(frequency), x -> x > 1) IS NOT NULL", r"function filter is not allowed"),
        ("row_number() OVER (ORDER BY clv_12m) <= 10", r"window functions \(OVER\) are not allowed"),
        ("frequency > 1 -- AND has_email", r"comments are not allowed in an expression \('AND has_email'\)"),
        ("rand() < 0.1", r"function rand is not allowed"),
        ("(" * 3000 + "frequency > 1" + ")" * 3000, r"nested too deeply"),
        # mistakes, named as well
        ("segmnt = 'Lost'", r"unknown column segmnt \(did you mean segment\?\)"),
        ("frequency +", r"cannot be read as SQL: Required keyword"),
        ("clv_12m * 2", r"'clv_12m \* 2' is not a condition \(true or false\)"),
    ],
)
def test_an_audience_that_is_not_a_plain_condition_is_refused_at_load_naming_the_file_and_the_part(tmp_path, audience, message):
    path = write(tmp_path, "spring_sale", yaml.safe_dump({"description": "d", "audience": audience}))
    with pytest.raises(CampaignError, match=rf"^{path}: audience: {message}"):
        load_campaign(path)
    with pytest.raises(CampaignError, match=rf"^{path}: audience: {message}"):
        load_campaigns(tmp_path)  # what the night's campaigns task calls first, before Spark


def test_order_by_is_checked_item_by_item_and_every_bad_field_is_named(tmp_path):
    text = yaml.safe_dump(
        {
            "description": "d",
            "audience": "java_method('java.lang.System', 'exit', 1) = 0",
            "order_by": ["clv_12m desc", "reflect('java.lang.System', 'getenv', 'HOME') desc"],
        }
    )
    path = write(tmp_path, "spring_sale", text)
    with pytest.raises(CampaignError) as error:
        load_campaign(path)
    assert str(error.value).startswith(f"{path}: audience: function java_method is not allowed")
    assert "; order_by[1]: function reflect is not allowed" in str(error.value)
    path.write_text(yaml.safe_dump({"description": "d", "audience": "true", "order_by": ["clv desc"]}))
    with pytest.raises(CampaignError, match=rf"^{path}: order_by\[0\]: unknown column clv \(did you mean clv_12m\?\)"):
        load_campaign(path)


def test_a_campaign_holds_its_expressions_as_checked_and_re_rendered():
    campaign = Campaign(
        name="win_back",
        description="d",
        audience="Segment IN ('At Risk', 'Can''t Lose Them') and `clv_12m_rank` >= 0.8",
        order_by=["clv_12m DESC", "nvl(frequency, 0)"],
    )
    assert campaign.audience == "segment IN ('At Risk', 'Can\\'t Lose Them') AND clv_12m_rank >= 0.8"
    assert campaign.order_by == ["clv_12m desc", "COALESCE(frequency, 0) asc"]


def test_check_campaign_files_reports_each_bad_file_and_keeps_the_good(tmp_path):
    good = write(tmp_path, "vip", "description: d\naudience: segment = 'Champions'\n")
    write(tmp_path, "leak", "description: d\naudience: reflect('java.lang.System', 'getenv', 'HOME') = ''\n")
    write(
        tmp_path,
        "stop",
        "description: d\naudience: frequency > 1\nenabled: false\norder_by: [\"java_method('java.lang.System', 'exit', 1)\"]\n",
    )
    files, problems = check_campaign_files(tmp_path)
    assert files == [good]
    assert [problem.split(": ")[:2] for problem in problems] == [
        [str(tmp_path / "leak.yaml"), "audience"],
        [str(tmp_path / "stop.yaml"), "order_by[0]"],
    ]


def test_the_night_stops_before_spark_on_a_bad_campaign_file_and_writes_no_audiences(tmp_path, test_environment):
    from core.config import load_config
    from jobs.campaigns import run

    folder = tmp_path / "campaigns"
    folder.mkdir()
    write(folder, "vip", "description: d\naudience: segment = 'Champions'\n")
    bad = write(folder, "win_back", "description: d\naudience: java_method('java.lang.System', 'exit', 1) = 0\n")
    settings = load_config(environ={"CRM_ENV": "test", "CRM_DATA_DIR": str(tmp_path / "data"), "CRM__CAMPAIGNS__FOLDER": str(folder)})
    with pytest.raises(CampaignError, match=rf"^{bad}: audience: function java_method is not allowed"):
        run(date(2026, 11, 26), settings, "manual")
    assert not (tmp_path / "data").exists()  # no Spark session, no lake, nothing half-written


# ---- with Spark ----------------------------------------------------------------------------------------

VIEW = (
    "customer_id long, segment string, frequency long, recency_days int, clv_12m double, "
    "accepts_marketing boolean, has_email boolean, open_inquiries int, open_cart_value double"
)


def view_of(spark, rows):
    return spark.createDataFrame(rows, VIEW)


def test_a_condition_spark_finds_of_the_wrong_type_names_the_file_and_the_field(spark):
    campaign = Campaign(name="spring_sale", description="d", audience="CASE WHEN frequency > 1 THEN 'yes' END")
    with pytest.raises(CampaignError, match=r"^conf/campaigns/spring_sale.yaml: audience: .*'yes'.* is string, not a condition"):
        check_expressions(campaign, view_of(spark, []), "conf/campaigns/spring_sale.yaml")


def full_view(spark, rows: list[dict]):
    """A customer view with every column of VIEW_COLUMNS; the rows set some, the rest are null."""
    schema = ", ".join(f"`{name}` {kind}" for name, kind in VIEW_COLUMNS.items())
    return spark.createDataFrame([tuple(row.get(name) for name in VIEW_COLUMNS) for row in rows], schema)


def test_every_shipped_campaign_selects_the_same_customers_from_its_checked_sql_as_from_its_text(spark):
    """Spark given the file's own text and Spark given the re-rendered SQL pick the same customers, also where
    sqlglot's Spark dialect reads a text otherwise ('Can''t Lose Them' is one literal with a quote in Spark)."""
    from decimal import Decimal

    def customer(customer_id, **values):
        return {"customer_id": customer_id, **values}

    rows = [
        customer(1, segment="At Risk", clv_12m_rank=0.85, recency_days=90),
        customer(2, segment="Can't Lose Them", clv_12m_rank=0.95, recency_days=61),
        customer(3, segment="Cant Lose Them", clv_12m_rank=0.95, recency_days=61),
        customer(4, segment="At Risk", clv_12m_rank=0.5, recency_days=90),
        customer(5, segment="Champions", clv_12m_rank=0.91, recency_days=5, frequency=1),
        customer(6, segment="Champions", clv_12m_rank=0.89, recency_days=20, frequency=1),
        customer(7, open_cart_value=Decimal("50.00")),
        customer(8, open_cart_value=Decimal("49.99"), browse_abandoned_products=2, days_since_last_visit=3),
        customer(9, open_cart_value=Decimal("0.00"), browse_abandoned_products=2, days_since_last_visit=2),
        customer(10, open_cart_value=Decimal("0.00"), browse_abandoned_products=0, days_since_last_visit=1),
        customer(11, frequency=1, recency_days=30),
        customer(12, frequency=2, recency_days=3),
    ]
    view = full_view(spark, rows)
    selected = {}
    for path in sorted(REPO_CAMPAIGNS.glob("*.yaml")):
        text = yaml.safe_load(path.read_text(encoding="utf-8"))["audience"]
        campaign = load_campaign(path)
        by_text = sorted(row.customer_id for row in view.where(text).select("customer_id").collect())
        by_checked = sorted(row.customer_id for row in view.where(campaign.audience).select("customer_id").collect())
        assert by_checked == by_text, (campaign.name, text, campaign.audience)
        selected[campaign.name] = by_checked
    assert selected == {"browse_abandonment": [9], "cart_reminder": [7], "new_customer_nurture": [5, 6, 11], "vip": [5], "win_back": [1, 2]}


@pytest.mark.parametrize(
    "audience",
    [
        "segment = 'Can''t Lose Them'",
        "segment = 'Can\\'t Lose Them'",
        "segment IN ('a\\\\b', 'tab\\there', 'é', '50%')",
        "segment LIKE 'Can%' OR segment LIKE '50\\%'",
        "segment NOT LIKE 'A%' AND segment IS NOT NULL",
        "NOT segment IS NULL AND NOT accepts_marketing",
        "`Frequency` BETWEEN 1 AND 2 OR frequency IN (-1, 3)",
        "frequency % 2 = 0 OR frequency / 2 > 1.5 OR -frequency < -4",
        "next_order_date <= date_add(run_date, 3)",
        "next_order_date >= date_sub(run_date, 3)",
        "datediff(run_date, next_order_date) > 2",
        "next_order_date < date '2026-11-20'",
        "coalesce(clv_12m, 0) >= 100 OR nvl(frequency, 0) = 0",
        "CASE WHEN frequency > 2 THEN clv_12m > 10 ELSE accepts_marketing END",
        "find_in_set('shoes', top_categories) > 0",
        "lower(segment) = 'champions' OR upper(segment) LIKE 'AT%'",
        "round(clv_12m_rank, 1) = 0.9 OR abs(clv_12m_rank - 0.5) < 0.1",
        "frequency > 1e0 AND clv_12m > 1.5BD",
        "frequency <=> 1",
    ],
)
def test_the_checked_sql_selects_what_spark_selects_from_the_text(spark, audience):
    """Literals, escapes, operators and functions: no difference between what was checked and what runs."""
    from decimal import Decimal

    segments = ["Can't Lose Them", "a\\b", "tab\there", "é", "50%", "Champions", "At Risk", None, "Cant Lose Them"]
    rows = [
        {
            "customer_id": index,
            "segment": segment,
            "frequency": index % 5 if index % 7 else None,
            "clv_12m": Decimal(index * 7 % 150),
            "clv_12m_rank": round(index / 20, 2),
            "accepts_marketing": index % 3 == 0,
            "next_order_date": date(2026, 11, 10 + index),
            "run_date": date(2026, 11, 20),
            "top_categories": "shoes,bags" if index % 4 == 0 else "bags",
        }
        for index, segment in enumerate(segments * 2)
    ]
    view = full_view(spark, rows)
    checked = Campaign(name="check", description="d", audience=audience).audience
    by_text = sorted(row.customer_id for row in view.where(audience).select("customer_id").collect())
    by_checked = sorted(row.customer_id for row in view.where(checked).select("customer_id").collect())
    assert by_checked == by_text, checked
    assert 0 < len(by_text) < len(rows), f"{audience} selects all or none: nothing compared"


def test_the_customer_view_has_exactly_the_columns_the_campaign_files_are_checked_against(spark, tmp_path):
    """VIEW_COLUMNS is what load time checks names against; the view the night builds from gold must agree."""
    from core.feature_schema import FEATURES
    from core.lake import Lake
    from jobs.campaigns import customer_view

    lake = Lake(spark, tmp_path / "lake")
    day = date(2026, 11, 26)
    features = spark.createDataFrame([], ", ".join(f"{feature.name} {feature.type}" for feature in FEATURES))
    lake.write_gold(features, "customer_features", day, "test")
    for table in (
        "customer_segments",
        "customer_scores",
        "customer_profile",
        "customer_satisfaction",
        "category_propensity",
        "coupon_offers",
        "customer_activity",
    ):
        lake.write_gold(None, table, day, "test")
    assert customer_view(lake, day).dtypes == list(VIEW_COLUMNS.items())


def customer(customer_id, segment="At Risk", clv=100.0, consent=True, email=True, inquiries=0, cart=0.0):
    return (customer_id, segment, 3, 90, clv, consent, email, inquiries, cart)


def outcome(frame) -> dict[tuple[str, int], tuple[str, str | None]]:
    return {(row.campaign, row.customer_id): (row.audience_group, row.suppression_reason) for row in frame.collect()}


def test_each_qualifying_customer_is_contacted_held_out_or_suppressed_with_the_first_reason(spark):
    rows = [
        customer(1),
        customer(2, consent=False),
        customer(3, consent=None),
        customer(4, email=False),
        customer(5, inquiries=1),
        customer(6),
        customer(7, clv=300.0, cart=80.0),
        customer(8, clv=200.0),
        customer(9, clv=50.0),
        customer(10, segment="Champions", cart=60.0),
    ]
    win_back = Campaign(
        name="win_back",
        description="d",
        audience="segment = 'At Risk'",
        priority=1,
        order_by=["clv_12m desc"],
        max_audience=3,
        control_share=0.0,
    )
    cart = Campaign(name="cart_reminder", description="d", audience="open_cart_value >= 50", priority=2, channel="sms", control_share=0.0)
    recent = spark.createDataFrame([(6,)], "customer_id long")
    result = outcome(audiences(view_of(spark, rows), [win_back, cart], Suppression(contacted_recently=recent)))
    assert result == {
        ("win_back", 1): ("treatment", None),
        ("win_back", 2): ("suppressed", "unsubscribed"),
        ("win_back", 3): ("suppressed", "consent_unknown"),  # no recorded consent: not contacted, and not "unsubscribed"
        ("win_back", 4): ("suppressed", "no_email"),
        ("win_back", 5): ("suppressed", "open_inquiry"),
        ("win_back", 6): ("suppressed", "contacted_recently"),
        ("win_back", 7): ("treatment", None),  # clv 300, 200, 100 are the three the cap keeps
        ("win_back", 8): ("treatment", None),
        ("win_back", 9): ("suppressed", "audience_limit"),
        ("cart_reminder", 7): ("suppressed", "other_campaign"),  # win_back came first tonight
        ("cart_reminder", 10): ("treatment", None),  # an sms campaign needs no e-mail address
    }


def test_the_control_group_has_its_share_and_never_moves_when_customers_come_and_go(spark):
    campaign = Campaign(name="win_back", description="d", audience="true", control_share=0.2)
    first = outcome(
        audiences(
            view_of(spark, [customer(n) for n in range(1, 4001)]), [campaign], Suppression(spark.createDataFrame([], "customer_id long"))
        )
    )
    grown = outcome(
        audiences(
            view_of(spark, [customer(n) for n in range(2001, 6001)]), [campaign], Suppression(spark.createDataFrame([], "customer_id long"))
        )
    )
    control = sum(group == "control" for group, _ in first.values())
    assert 0.18 * 4000 < control < 0.22 * 4000
    # The customers of both nights keep their group; the group is the one the plain hash gives.
    for key in first.keys() & grown.keys():
        assert first[key] == grown[key]
        assert (first[key][0] == "control") == (control_bucket("win_back", key[1]) < 0.2 * BUCKETS)


def test_the_control_bucket_is_the_same_in_python_and_spark(spark):
    ids = [1, 2, 17, 123456789, 2**40 + 3]
    frame = spark.createDataFrame([(n,) for n in ids], "customer_id long")
    spark_buckets = [row.bucket for row in frame.select(control_bucket_column("vip").alias("bucket")).collect()]
    assert spark_buckets == [control_bucket("vip", n) for n in ids]
    assert len({control_bucket("vip", n) for n in range(1000)}) > 900  # spread out


@pytest.mark.parametrize(
    ("consent_when_missing", "expected"),
    [("unknown", ("suppressed", "consent_unknown")), ("granted", ("treatment", None)), ("denied", ("suppressed", "unsubscribed"))],
)
def test_a_customer_without_recorded_consent_is_treated_as_configured(spark, consent_when_missing, expected):
    """A shop without a consent column (accepts_marketing null for all): `campaigns.consent_when_missing` decides;
    an explicit refusal stays `unsubscribed` whatever it says."""
    campaign = Campaign(name="win_back", description="d", audience="segment = 'At Risk'", control_share=0.0)
    rows = [customer(1, consent=None), customer(2, consent=False)]
    suppression = Suppression(spark.createDataFrame([], "customer_id long"), consent_when_missing)
    result = outcome(audiences(view_of(spark, rows), [campaign], suppression))
    assert result == {("win_back", 1): expected, ("win_back", 2): ("suppressed", "unsubscribed")}
