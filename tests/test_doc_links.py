"""Every relative link in README.md and docs/*.md resolves, and the README stays a map.

A link resolves when its file (or folder) exists relative to the linking file and, for `file.md#anchor` or
`#anchor`, the target has a heading whose GitHub anchor is `anchor`. External links (http, https, mailto)
are not checked. Links inside code (fenced blocks, `code spans`) are not links.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOC_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 260

FENCE = re.compile(r"^[ \t]*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
#: A code span: backticks to backticks, not across a blank line.
CODE_SPAN = re.compile(r"`(?:[^`\n]|\n(?![ \t]*\n))*`")
#: [text](target "title") and ![alt](target); the text may hold one level of brackets.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s>]*(?:\([^()\s]*\)[^()\s>]*)*)>?(?:\s+[\"'(].*?[\"')])?\s*\)")
#: [label]: target
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*<?(\S+?)>?(?:[ \t].*)?$", re.M)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation except '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def without_code(text: str) -> str:
    """The text with fenced blocks and code spans blanked out (newlines kept, so offsets keep their line)."""
    lines, fence = [], None
    for line in text.split("\n"):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            lines.append("")
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            lines.append("")
        else:
            lines.append(line)
    return CODE_SPAN.sub(lambda match: re.sub(r"[^\n]", " ", match.group(0)), "\n".join(lines))


def headings_text(path: Path) -> list[str]:
    """Headings with their code spans kept (for the anchors: GitHub drops the backticks, keeps the words)."""
    result, fence = [], None
    for line in path.read_text(encoding="utf-8").split("\n"):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
        elif heading := HEADING.match(line):
            result.append(heading.group(2))
    return result


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings, duplicates numbered as GitHub does (-1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in headings_text(path):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link in a Markdown file, code left out."""
    text = without_code(path.read_text(encoding="utf-8"))
    found = []
    for pattern in (INLINE_LINK, REFERENCE):
        for match in pattern.finditer(text):
            found.append((text.count("\n", 0, match.start(1)) + 1, match.group(1)))
    return sorted(found)


def broken_links(path: Path) -> list[str]:
    """One line per link of `path` that does not resolve: where, the target, and why."""
    problems = []
    for line, target in links(path):
        if not target or EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{line}: {target}"
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if file_part and not linked.exists():
            problems.append(f"{where}: no such file")
            continue
        if anchor:
            if linked.is_dir() or linked.suffix != ".md":
                problems.append(f"{where}: an anchor into a file that is not Markdown")
            elif unquote(anchor) not in anchors(linked):
                problems.append(f"{where}: no heading with the anchor #{anchor} in {linked.name}")
    return problems


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    problems = broken_links(path)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_readme_is_a_map():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; the details belong in docs/"


def test_anchors_follow_github():
    assert slug("The command line, and is the pipeline healthy?") == "the-command-line-and-is-the-pipeline-healthy"
    assert slug("What `make demo` shows") == "what-make-demo-shows"
    assert (
        slug("Customer features (`gold/customer_features`, one partition per `as_of`)")
        == "customer-features-goldcustomer_features-one-partition-per-as_of"
    )
    assert (
        slug("For marketing tools: the export contract (schema version 3.3)") == "for-marketing-tools-the-export-contract-schema-version-33"
    )


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## Twice\n\n## Twice\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md#twice-1) [fine too](#page) [web](https://example.com/x.md#nowhere)\n"
        "`[in code](missing.md)`\n\n```\n[in a block](missing.md)\n```\n\n"
        "[gone](missing.md) [no heading](other.md#nowhere)\n[label]: gone-too.md\n",
        encoding="utf-8",
    )
    problems = broken_links(page)
    assert [problem.split(": ", 1)[1] for problem in problems] == [
        "missing.md: no such file",
        "other.md#nowhere: no heading with the anchor #nowhere in other.md",
        "gone-too.md: no such file",
    ], problems
