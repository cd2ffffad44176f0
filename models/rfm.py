"""RFM: quintile scores for recency, frequency and monetary value, and the named segments.

Scores run from 1 (worst) to 5 (best) among the customers with at least one purchase:
`score = floor((rank - 1) * 5 / n) + 1`, where `rank` is the customer's rank (1 = worst value) among `n`
customers and tied values share their lowest rank (SQL `RANK()`, pandas `rank(method="min")`). So equal
values always get the same score, and the result does not depend on row order. Recency ranks the longest
ago as worst; frequency and monetary rank the smallest as worst.

Segments come from a rule table (`conf/segments.yaml`) that marketing edits: the first rule whose r, f and
m ranges all hold names the segment.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import yaml
from pyspark.sql import Column, DataFrame, Window
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
        return (
            F.col("r_score").between(*self.r) & F.col("f_score").between(*self.f) & F.col("m_score").between(*self.m)
        )


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
        uncovered = [cell for cell in itertools.product(range(1, SCORE_BINS + 1), repeat=3)
                     if table.segment_for(*cell) is None]
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
        if (not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, int) for v in value)
                or not SCORE_RANGE[0] <= value[0] <= value[1] <= SCORE_RANGE[1]):
            raise SegmentRulesError(f"{label} ({item['name']}): {key} must be [low, high] with 1 <= low <= high <= 5, got {value!r}")
        ranges[key] = (value[0], value[1])
    return SegmentRule(str(item["name"]), str(item.get("description", "")), **ranges)


def quintile_score(value: str, best_is_high: bool) -> Column:
    """The 1-5 score of `value` among rows where it is not null (see the module docstring)."""
    order = F.col(value).asc() if best_is_high else F.col(value).desc()
    scored = F.col(value).isNotNull()
    # One window over all buyers: a quintile is a global rank, so it cannot be split by partition.
    rank = F.rank().over(Window.partitionBy(scored).orderBy(order))
    buyers = F.count(F.lit(1)).over(Window.partitionBy(scored))
    return F.when(scored, F.floor((rank - 1) * SCORE_BINS / buyers).cast("int") + 1)


def with_rfm_scores(features: DataFrame) -> DataFrame:
    """Add `r_score`, `f_score`, `m_score` (1-5, null without purchases) and `rfm_code` ("545")."""
    buyers = features.withColumns({
        "_recency": F.when(F.col("frequency") > 0, F.col("recency_days")),
        "_frequency": F.when(F.col("frequency") > 0, F.col("frequency")),
        "_monetary": F.when(F.col("frequency") > 0, F.col("monetary")),
    })
    scored = buyers.withColumns({
        "r_score": quintile_score("_recency", best_is_high=False),
        "f_score": quintile_score("_frequency", best_is_high=True),
        "m_score": quintile_score("_monetary", best_is_high=True),
    })
    return scored.drop("_recency", "_frequency", "_monetary").withColumn(
        "rfm_code", F.concat(F.col("r_score").cast("string"), F.col("f_score").cast("string"), F.col("m_score").cast("string"))
    )


def with_segment(scores: DataFrame, rules: SegmentRules) -> DataFrame:
    """Add `segment`, named by the rule table."""
    return scores.withColumn("segment", rules.segment_column())
