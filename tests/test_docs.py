"""The README's generated sections match the code: shop schema, CRM tables, configuration reference."""
from __future__ import annotations

from cli.docs import README, render


def test_readme_generated_sections_are_up_to_date():
    current = README.read_text(encoding="utf-8")
    assert render(current) == current, "README.md is stale: run `python -m cli.docs`"


def test_readme_opens_with_the_two_commands():
    head = README.read_text(encoding="utf-8")[:1200]
    assert "make demo" in head and "make test" in head
