"""RFM: quintile scores for recency (`recency_days`), frequency (`purchase_count`) and monetary value
(`total_spent`), and the named segments.

Scores run from 1 (worst) to 5 (best) among the customers with at least one purchase:
`score = floor((rank - 1) * 5 / n) + 1`, where `rank` is the customer's rank (1 = worst value) among `n`
customers and tied values share their lowest rank (SQL `RANK()`, pandas `rank(method="min")`). So equal
values always get the same score, and the result does not depend on row order. Recency ranks the longest
ago as worst; purchase count and total spent rank the smallest as worst. The scores are computed from four exact
cut points per measure (`cut_points`), which need no global sort: a global `rank()` window would put every
customer in one partition.

Segments come from a rule table (`conf/segments.yaml`) that marketing edits: the first rule whose r, f and
m ranges all hold names the segment.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import yaml
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

SCORE_BINS = 5
SCORE_RANGE = (1, SCORE_BINS)


class SegmentRulesError(ValueError):
    """The segment rule table is invalid; the message names the file and the rule."""


@dataclass(frozen=True)
class SegmentRule:
    """A named segment: the inclusive score ranges it takes."""

    name: str
    description: str
    r: tuple[int, int] = SCORE_RANGE
    f: tuple[int, int] = SCORE_RANGE
    m: tuple[int, int] = SCORE_RANGE

    def holds(self, r: int, f: int, m: int) -> bool:
        return all(low <= score <= high for score, (low, high) in ((r, self.r), (f, self.f), (m, self.m)))

    def condition(self) -> Column:
        return F.col("r_score").between(*self.r) & F.col("f_score").between(*self.f) & F.col("m_score").between(*self.m)


@dataclass(frozen=True)
class SegmentRules:
    """The ordered rule table, plus the segment of customers without a purchase."""

    rules: tuple[SegmentRule, ...]
    no_purchase_segment: str

    @classmethod
    def load(cls, path: Path) -> SegmentRules:
        """Read and check the table: known fields, ranges within 1-5, every score combination covered."""
        where = str(path)
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SegmentRulesError(f"{where}: file not found") from None
        if not isinstance(data, dict) or set(data) - {"segments", "no_purchase_segment"}:
            unknown = sorted(set(data) - {"segments", "no_purchase_segment"}) if isinstance(data, dict) else data
            raise SegmentRulesError(f"{where}: expected keys 'segments' and 'no_purchase_segment', got {unknown}")
        rules = tuple(_rule(where, index, item) for index, item in enumerate(data.get("segments") or []))
        if not rules:
            raise SegmentRulesError(f"{where}: 'segments' lists no rule")
        table = cls(rules, str(data.get("no_purchase_segment") or "Prospects"))
        uncovered = [cell for cell in itertools.product(range(1, SCORE_BINS + 1), repeat=3) if table.segment_for(*cell) is None]
        if uncovered:
            shown = ", ".join(f"r={r} f={f} m={m}" for r, f, m in uncovered[:5])
            raise SegmentRulesError(f"{where}: {len(uncovered)} score combination(s) match no rule, e.g. {shown}")
        return table

    def segment_for(self, r: int, f: int, m: int) -> str | None:
        """The segment of one score combination (first rule that holds), None when none does."""
        return next((rule.name for rule in self.rules if rule.holds(r, f, m)), None)

    def segment_column(self) -> Column:
        """A Spark expression naming the segment from `r_score`, `f_score`, `m_score` (null scores: no purchase)."""
        expression = F.when(F.col("r_score").isNull(), F.lit(self.no_purchase_segment))
        for rule in self.rules:
            expression = expression.when(rule.condition(), F.lit(rule.name))
        return expression


def _rule(where: str, index: int, item: object) -> SegmentRule:
    label = f"{where}: segments[{index}]"
    if not isinstance(item, dict):
        raise SegmentRulesError(f"{label}: expected a mapping with name, description, r, f, m")
    unknown = set(item) - {"name", "description", "r", "f", "m"}
    if unknown:
        raise SegmentRulesError(f"{label}: unknown field(s) {', '.join(sorted(unknown))}; expected name, description, r, f, m")
    if not item.get("name"):
        raise SegmentRulesError(f"{label}: missing 'name'")
    ranges = {}
    for key in ("r", "f", "m"):
        value = item.get(key, list(SCORE_RANGE))
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int) for v in value)
            or not SCORE_RANGE[0] <= value[0] <= value[1] <= SCORE_RANGE[1]
        ):
            raise SegmentRulesError(f"{label} ({item['name']}): {key} must be [low, high] with 1 <= low <= high <= 5, got {value!r}")
        ranges[key] = (value[0], value[1])
    return SegmentRule(str(item["name"]), str(item.get("description", "")), **ranges)


#: The scores, in the order of the RFM code.
SCORES = ("r_score", "f_score", "m_score")


def measures() -> dict[str, Column]:
    """Each score's measure as a whole number whose larger values are better (recency counts against)."""
    return {
        "r_score": -F.col("recency_days").cast("long"),
        "f_score": F.col("purchase_count").cast("long"),
        "m_score": (F.col("total_spent") * 100).cast("long"),  # cents: exact as a whole number
    }


#: Relative rank error of the approximate quantiles that bracket each exact cut point (see `cut_points`).
BRACKET_ERROR = 0.001


def cut_positions(buyers: int) -> list[int]:
    """1-based positions `c_k = ceil((k - 1) * n / 5)`, k = 2..5, of the values that end each score band.

    `floor((rank - 1) * 5 / n) + 1 >= k` holds exactly when at least `c_k` values are worse, that is when
    the value is above the `c_k`-th worst one; so four order statistics decide every score.
    """
    return [-(-(k - 1) * buyers // SCORE_BINS) for k in range(2, SCORE_BINS + 1)]


def cut_points(values: DataFrame, buyers: int) -> dict[str, list[int]]:
    """The exact order statistics at `cut_positions` of each measure column of `values` (no global sort).

    Approximate quantiles (one pass) give, for each position, a bracket of values that surely holds it;
    a second pass counts the values below each bracket and the values inside it (grouped by value, so
    ties cost nothing). The position within the bracket then names the exact value.
    """
    positions = cut_positions(buyers)
    margin = 2 * BRACKET_ERROR
    probabilities = []
    for position in positions:
        probabilities += [max(0.0, (position - 1) / buyers - margin), min(1.0, position / buyers + margin)]
    columns = list(SCORES)
    quantiles = values.approxQuantile(columns, probabilities, BRACKET_ERROR)
    brackets = {
        column: [(int(found[2 * i]), int(found[2 * i + 1])) for i in range(len(positions))] for column, found in zip(columns, quantiles)
    }
    below = values.agg(
        *[
            F.count(F.when(F.col(column) < low, 1)).alias(f"{column}_{i}")
            for column in columns
            for i, (low, _) in enumerate(brackets[column])
        ]
    ).first()
    inside = {column: F.lit(False) for column in columns}
    for column in columns:
        for low, high in brackets[column]:
            inside[column] = inside[column] | F.col(column).between(low, high)
    counted = (
        values.select(
            F.explode(
                F.array(
                    *[F.when(inside[column], F.struct(F.lit(column).alias("measure"), F.col(column).alias("value"))) for column in columns]
                )
            ).alias("entry")
        )
        .where(F.col("entry").isNotNull())
        .groupBy("entry.measure", "entry.value")
        .count()
        .collect()
    )
    distribution: dict[str, list[tuple[int, int]]] = {column: [] for column in columns}
    for row in counted:
        distribution[row["measure"]].append((row["value"], row["count"]))
    points = {}
    for column in columns:
        ordered = sorted(distribution[column])
        points[column] = [
            _value_at(ordered, low, high, position - below[f"{column}_{i}"], column)
            for i, ((low, high), position) in enumerate(zip(brackets[column], positions))
        ]
    return points


def _value_at(ordered: list[tuple[int, int]], low: int, high: int, position: int, column: str) -> int:
    """The `position`-th value (1-based) among the (value, count) pairs within [low, high]."""
    seen = 0
    for value, count in ordered:
        if low <= value <= high:
            seen += count
            if seen >= position:
                return value
    raise RuntimeError(f"{column}: cut point not inside its bracket [{low}, {high}]; approximate quantiles failed")


def with_rfm_scores(features: DataFrame) -> DataFrame:
    """Add `r_score`, `f_score`, `m_score` (1-5, null without purchases) and `rfm_code` ("545").

    Scores follow the module docstring's rank formula exactly; they are computed from four cut points per
    measure (`cut_points`), so no global sort or single-partition window is needed.
    """
    is_buyer = F.col("purchase_count") > 0
    values = features.where(is_buyer).select(*[expression.alias(name) for name, expression in measures().items()])
    buyers = values.count()
    points = cut_points(values, buyers) if buyers else {name: [] for name in SCORES}
    scores = {}
    for name, expression in measures().items():
        score = F.lit(1)
        for point in points[name]:
            score = score + (expression > F.lit(point)).cast("int")
        scores[name] = F.when(is_buyer, score)
    scored = features.withColumns(scores)
    return scored.withColumn(
        "rfm_code", F.concat(F.col("r_score").cast("string"), F.col("f_score").cast("string"), F.col("m_score").cast("string"))
    )


def with_segment(scores: DataFrame, rules: SegmentRules) -> DataFrame:
    """Add `segment`, named by the rule table."""
    return scores.withColumn("segment", rules.segment_column())
