"""The SQL a campaign file may hold: a condition (or a sort key) over the customer view's columns, nothing else.

Campaign files are written by marketing, not by the people who hold the database passwords, and Spark SQL
can read files (a subquery on text.`/etc/passwd`), the environment (`reflect`, `${env:...}`) or stop the JVM
(`java_method`). So an expression is parsed with a real SQL parser (sqlglot, Spark's dialect) and accepted
only when every part of it is on a short list (`checked_sql`): columns of the view, literals, comparison,
boolean and arithmetic operators, IN (a list of literals), BETWEEN, LIKE, IS [NOT] NULL, CASE, CAST to a plain
type, parentheses and the pure functions of `FUNCTIONS`. Spark is then handed the SQL re-rendered from the
checked tree, never the file's text, so that what Spark runs is what was checked even where the two parsers
read a text differently.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

import sqlglot
from sqlglot import exp
from sqlglot.dialects.spark import Spark
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType


class CampaignSpark(Spark):
    """Spark's dialect as Spark 4 reads a string: `''` inside quotes is a quote (`'Can''t Lose Them'`).

    sqlglot's own Spark dialect reads `'Can''t'` as the two literals 'Can' and 't', concatenated: a shipped
    campaign would silently select other customers after re-rendering.
    """

    class Tokenizer(Spark.Tokenizer):
        STRING_ESCAPES = ["\\", "'"]


#: The functions a campaign may call, by the name written in the file, with the parser's node types for them.
FUNCTIONS: dict[str, tuple[type[exp.Expression], ...]] = {
    "abs": (exp.Abs,),
    "round": (exp.Round,),
    "floor": (exp.Floor,),
    "ceil": (exp.Ceil,),
    "least": (exp.Least,),
    "greatest": (exp.Greatest,),
    "coalesce": (exp.Coalesce,),  # also written nvl or ifnull
    "nullif": (exp.Nullif,),
    "if": (exp.If,),
    "lower": (exp.Lower,),
    "upper": (exp.Upper,),
    "length": (exp.Length,),
    "trim": (exp.Trim,),
    "substring": (exp.Substring,),
    "startswith": (exp.StartsWith,),
    "contains": (exp.Contains,),
    "find_in_set": (),  # top_categories and the product ids are comma-separated lists
    "date_add": (exp.TsOrDsAdd,),  # date_sub(d, n) is read as date_add(d, n * -1)
    "date_sub": (exp.TsOrDsAdd,),
    "datediff": (exp.DateDiff,),
    "months_between": (exp.MonthsBetween,),
    "to_date": (exp.TsOrDsToDate,),  # also what datediff, year, month, day and dayofweek read their dates with
    "year": (exp.Year,),
    "month": (exp.Month,),
    "day": (exp.Day,),
    "dayofweek": (exp.DayOfWeek,),
}
#: Functions the parser does not know by a node type of their own: allowed by name.
_NAMED_FUNCTIONS = {name for name, kinds in FUNCTIONS.items() if not kinds}
_FUNCTION_KINDS = tuple(kind for kinds in FUNCTIONS.values() for kind in kinds)
#: Functions that give true or false: an audience may be one of them alone.
_CONDITION_FUNCTIONS = (exp.StartsWith, exp.Contains)

#: Everything else a condition may be built of (functions apart).
_STRUCTURE = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.Paren,
    exp.Neg,
    exp.Not,
    exp.And,
    exp.Or,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.NullSafeEQ,
    exp.Is,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.Mod,
    exp.Between,
    exp.In,
    exp.Like,
    exp.Case,
    exp.If,  # CASE's WHEN ... THEN
    exp.Cast,
    exp.TryCast,  # how the parser reads CAST in Spark's dialect
    exp.DataType,
    exp.DataTypeParam,
)
#: The types CAST may name (`date '2026-01-01'` is a CAST to date too).
CAST_TYPES = ("string", "int", "bigint", "double", "decimal", "date", "timestamp", "boolean")
_CAST_TYPES = {
    exp.DataType.Type.TEXT,
    exp.DataType.Type.VARCHAR,
    exp.DataType.Type.INT,
    exp.DataType.Type.BIGINT,
    exp.DataType.Type.DOUBLE,
    exp.DataType.Type.DECIMAL,
    exp.DataType.Type.DATE,
    exp.DataType.Type.TIMESTAMP,
    exp.DataType.Type.BOOLEAN,
}
_LITERALS = (exp.Literal, exp.Boolean, exp.Null)


class ExpressionError(ValueError):
    """A campaign expression uses something that is not allowed; the message names the part."""


def allowed_functions() -> str:
    return ", ".join(FUNCTIONS)


def checked_sql(text: str, columns: Mapping[str, str], condition: bool = False) -> str:
    """`text` checked part by part and re-rendered as the Spark SQL to run; raises ExpressionError naming the part.

    `columns`: the names a column reference may use, with their Spark types; `condition`: the expression must
    give true or false (an audience), not a number or a text.
    """
    try:
        return _checked_rendering(text, columns, condition)
    except RecursionError:
        raise ExpressionError("nested too deeply; write it more plainly") from None


def _checked_rendering(text: str, columns: Mapping[str, str], condition: bool) -> str:
    _refuse_comments_and_statements(text)
    tree = _checked_tree(text, columns)
    if condition and not _is_condition(tree, columns):
        raise ExpressionError(f"{tree.sql(dialect=CampaignSpark)!r} is not a condition (true or false), e.g. clv_12m >= 100")
    canonical = tree.transform(lambda node: exp.column(node.name.lower()) if isinstance(node, exp.Column) else node)
    rendered = canonical.sql(dialect=CampaignSpark, comments=False)
    # What Spark reads must be what was checked: the rendering passes the same checks and renders to itself.
    _refuse_comments_and_statements(rendered)
    again = _checked_tree(rendered, columns)
    if again.sql(dialect=CampaignSpark, comments=False) != rendered or "${" in rendered:
        raise ExpressionError(f"{text!r} cannot be checked reliably; write it more plainly")
    return rendered


def _checked_tree(text: str, columns: Mapping[str, str]) -> exp.Expression:
    """The one expression of `text`, every part of it checked."""
    try:
        trees = sqlglot.parse(text, dialect=CampaignSpark)
    except (ParseError, TokenError) as error:
        raise ExpressionError(f"cannot be read as SQL: {_parse_problem(error)}") from None
    trees = [tree for tree in trees if tree is not None]
    if len(trees) != 1:
        raise ExpressionError("expected one expression")
    for node in trees[0].walk():
        _check_part(node, columns)
    return trees[0]


def _refuse_comments_and_statements(text: str) -> None:
    try:
        tokens = CampaignSpark().tokenize(text)
    except TokenError as error:
        raise ExpressionError(f"cannot be read as SQL: {error}") from None
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            raise ExpressionError("';' is not allowed: one expression, not statements")
        for comment in token.comments:
            if "/*+" in text:
                raise ExpressionError(f"hints are not allowed (/*+{comment}*/)")
            raise ExpressionError(f"comments are not allowed in an expression ({comment.strip()!r}); write them in the YAML with #")


def _parse_problem(error: Exception) -> str:
    details = getattr(error, "errors", None)
    if details:
        first = details[0]
        return f"{first.get('description')} (at column {first.get('col')})"
    return str(error).splitlines()[0]


def _check_part(node: exp.Expression, columns: Mapping[str, str]) -> None:
    if isinstance(node, exp.Column):
        _check_column(node, columns)
    elif isinstance(node, exp.Literal) and node.is_string and "${" in node.this:
        raise ExpressionError(
            f"'${{' is not allowed in a string ({node.sql(dialect=CampaignSpark)}): Spark would put a setting or the environment there"
        )
    elif isinstance(node, exp.In):
        if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
            raise ExpressionError(f"IN takes a list of values, not a query ({node.sql(dialect=CampaignSpark)})")
        for value in node.expressions:
            if not _is_literal(value):
                raise ExpressionError(f"IN takes a list of values; {value.sql(dialect=CampaignSpark)} is not one")
    elif isinstance(node, (exp.Cast, exp.TryCast)):
        if node.to.this not in _CAST_TYPES:
            raise ExpressionError(f"CAST to {node.to.sql(dialect=CampaignSpark)} is not allowed (allowed: {', '.join(CAST_TYPES)})")
    elif isinstance(node, exp.Var):
        if node.arg_key != "unit" or not isinstance(node.parent, exp.TsOrDsAdd):
            raise ExpressionError(f"{node.sql(dialect=CampaignSpark)} is not allowed")
    elif isinstance(node, exp.Anonymous):
        if node.name.lower() not in _NAMED_FUNCTIONS:
            raise ExpressionError(f"function {node.name.lower()} is not allowed (allowed: {allowed_functions()})")
    elif isinstance(node, _FUNCTION_KINDS) or isinstance(node, _STRUCTURE):
        return
    elif isinstance(node, (exp.Query, exp.Subquery)) or (isinstance(node, exp.Exists) and isinstance(node.this, exp.Query)):
        raise ExpressionError(f"subqueries are not allowed ({_excerpt(node)})")
    elif isinstance(node, exp.Table):
        raise ExpressionError(f"tables and files are not allowed ({_excerpt(node)})")
    elif isinstance(node, exp.Window):
        raise ExpressionError(f"window functions (OVER) are not allowed ({_excerpt(node)})")
    elif isinstance(node, exp.Lambda):
        raise ExpressionError(f"lambda functions are not allowed ({_excerpt(node)})")
    elif isinstance(node, exp.Func):
        raise ExpressionError(f"function {node.sql_name().lower()} is not allowed (allowed: {allowed_functions()})")
    else:
        raise ExpressionError(f"{_excerpt(node)!r} is not allowed here")


def _check_column(node: exp.Column, columns: Mapping[str, str]) -> None:
    if node.table or node.args.get("db") or node.args.get("catalog"):
        raise ExpressionError(f"{node.sql(dialect=CampaignSpark)}: name a column of the customer view alone, without a table")
    if isinstance(node.this, exp.Star):
        raise ExpressionError("* is not allowed: name the columns")
    name = node.name.lower()
    if name not in columns:
        hint = difflib.get_close_matches(name, list(columns), n=1)
        raise ExpressionError(
            f"unknown column {node.name}"
            + (f" (did you mean {hint[0]}?)" if hint else "")
            + f"; the customer view's columns: {', '.join(columns)}"
        )


def _is_literal(node: exp.Expression) -> bool:
    if isinstance(node, exp.Neg):
        return _is_literal(node.this)
    if isinstance(node, (exp.Cast, exp.TryCast)):
        return _is_literal(node.this)
    return isinstance(node, _LITERALS)


def _is_condition(node: exp.Expression, columns: Mapping[str, str]) -> bool:
    """Whether the expression gives true or false, as far as its form tells (Spark checks the types too)."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Column):
        return columns.get(node.name.lower()) == "boolean"
    if isinstance(node, (exp.Case, exp.If, exp.Coalesce, exp.Nullif)):
        return True  # depends on their branches: Spark tells at night
    return isinstance(node, (exp.Predicate, exp.Connector, exp.Not, exp.Boolean, *_CONDITION_FUNCTIONS))


def _excerpt(node: exp.Expression, limit: int = 80) -> str:
    text = node.sql(dialect=CampaignSpark, comments=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."
