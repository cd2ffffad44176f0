"""The generated sections of the docs match the code: shop schema, CRM tables, features, configuration reference."""

from __future__ import annotations

import pytest

from cli.docs import README, REPO_ROOT, SECTION_FILES, render


@pytest.mark.parametrize("path", sorted(set(SECTION_FILES.values())), ids=lambda path: path.name)
def test_generated_sections_are_up_to_date(path):
    current = path.read_text(encoding="utf-8")
    assert render(current, path) == current, f"{path.relative_to(REPO_ROOT)} is stale: run `python -m cli.docs`"


def test_readme_opens_with_the_two_commands():
    head = README.read_text(encoding="utf-8")[:1200]
    assert "make demo" in head and "make test" in head
