"""Generated parts of the docs: the shop schema, the CRM tables, the features and the configuration reference.

`python -m cli.docs` rewrites the sections between `<!-- BEGIN name -->` and `<!-- END name -->` in the
file that holds each (`SECTION_FILES`); a test fails when the docs and the code disagree, so the docs cannot
drift from what is written.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from sqlalchemy import MetaData

from core import feature_schema
from core.config import REPO_ROOT, settings_reference
from core.crm_schema import CRM_NAMES, database_metadata
from core.shop_schema import SHOP_TABLES, events_metadata
from core.shop_schema import metadata as shop_metadata
from jobs.events import SILVER_EVENT_COLUMNS
from models.campaigns import Campaign

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"

#: The file that holds each generated section.
SECTION_FILES: dict[str, Path] = {
    "shop-schema": DOCS / "shop-model.md",
    "events-schema": DOCS / "shop-model.md",
    "silver-events": DOCS / "events.md",
    "crm-tables": DOCS / "crm-tables.md",
    "customer-features": DOCS / "crm-tables.md",
    "crm-names": DOCS / "crm-tables.md",
    "configuration": DOCS / "configuration.md",
    "campaign-fields": DOCS / "campaigns.md",
}


def tables_markdown(metadata: MetaData, names: list[str]) -> str:
    """One Markdown table per database table: column, type, meaning."""
    parts = []
    for name in names:
        table = metadata.tables[name]
        parts.append(f"**`{table.name}`**: {table.comment}\n")
        parts.append("| column | type | meaning |\n| --- | --- | --- |")
        for column in table.columns:
            key = " (key)" if column.primary_key else ""
            parts.append(f"| `{column.name}` | {str(column.type).lower()} | {(column.comment or '')}{key} |")
        parts.append("")
    return "\n".join(parts).rstrip()


def campaign_fields_markdown() -> str:
    """The fields of a campaign file: name, default, meaning."""
    rows = ["| field | default | meaning |", "| --- | --- | --- |"]
    for name, field in Campaign.model_fields.items():
        if name == "name":
            continue
        default = (
            "(required)" if field.is_required() else (f"`{field.default_factory()}`" if field.default_factory else f"`{field.default}`")
        )
        rows.append(f"| `{name}` | {default} | {field.description} |")
    return "\n".join(rows)


def crm_names_markdown() -> str:
    """The CRM columns named otherwise than their measure (`core.crm_schema.CRM_NAMES`): table, column, measure."""
    rows = ["| CRM table (and export file) | column | measure in gold/customer_features and the code |", "| --- | --- | --- |"]
    rows += [f"| `{table}` | `{column}` | `{measure}` |" for table, names in CRM_NAMES.items() for measure, column in names.items()]
    return "\n".join(rows)


def silver_events_markdown() -> str:
    """The columns of silver/events: column, type, meaning."""
    rows = ["| column | type | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{name}` | {kind} | {meaning} |" for name, (kind, meaning) in SILVER_EVENT_COLUMNS.items()]
    return "\n".join(rows)


def sections() -> dict[str, str]:
    crm = database_metadata(None)
    return {
        "shop-schema": tables_markdown(shop_metadata, list(SHOP_TABLES)),
        "events-schema": tables_markdown(events_metadata, ["events"]),
        "silver-events": silver_events_markdown(),
        "crm-tables": tables_markdown(crm, sorted(crm.tables)),
        "customer-features": feature_schema.markdown(),
        "crm-names": crm_names_markdown(),
        "configuration": settings_reference(),
        "campaign-fields": campaign_fields_markdown(),
    }


def render(text: str, path: Path = README) -> str:
    """The text of `path` with every generated section it holds brought up to date."""
    for name, body in sections().items():
        if SECTION_FILES[name] != path:
            continue
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"{path.relative_to(REPO_ROOT)}: missing the markers <!-- BEGIN {name} --> ... <!-- END {name} -->")
        text = pattern.sub(lambda match: match.group(1) + body + "\n" + match.group(2), text)
    return text


def main() -> int:
    for path in sorted(set(SECTION_FILES.values())):
        current = path.read_text(encoding="utf-8")
        updated = render(current, path)
        if updated != current:
            path.write_text(updated, encoding="utf-8")
            print(f"{path.relative_to(REPO_ROOT)} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
