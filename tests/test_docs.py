"""The README is a short front door and the docs behind it stay true to the project.

They read Markdown as text: links must land on a file and a heading that
exist, every make target must be documented, and a summary shown in a table
of targets must be the one ``make help`` prints (``dbtools/catalog.py``), so
the docs cannot drift from the Makefile or from each other unnoticed.
"""

from __future__ import annotations

import re
from pathlib import Path

from dbtools import catalog
from tests.helpers import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target); the target may carry a "title" after a space.
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
EXTERNAL = ("http://", "https://", "mailto:")


def prose(text: str) -> str:
    """The text outside code blocks: a `# comment` in a block is no heading, `x[0](y)` no link."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for heading in HEADING.findall(prose(page.read_text())):
        base = slug(heading)
        name, n = base, 0
        while name in found:  # GitHub numbers repeated headings: name, name-1, name-2
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def relative_links(page: Path) -> list[str]:
    text = INLINE_CODE.sub("", prose(page.read_text()))
    return [target for target in LINK.findall(text) if target and not target.startswith(EXTERNAL)]


def targets_tables(page: Path) -> list[tuple[str, str]]:
    """(target, summary) for each row of a table whose header begins `| target | summary |`."""
    rows: list[tuple[str, str]] = []
    in_table = False
    for line in page.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if cells[:2] == ["target", "summary"]:
            in_table = True
        elif not cells:
            in_table = False
        elif in_table and not set(cells[0]) <= set("-: "):
            match = re.fullmatch(r"`make ([a-z-]+)`", cells[0])
            assert match, f"{page.name}: a targets table names each target as `make <target>`: {cells[0]}"
            rows.append((match.group(1), cells[1]))
    return rows


def makefile_targets() -> list[str]:
    return re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE)


def test_anchors_are_the_ones_github_makes() -> None:
    assert slug("Non-transactional steps: `autocommit_block()`") == "non-transactional-steps-autocommit_block"
    assert slug("Schema snapshot: `schema/*.sql`") == "schema-snapshot-schemasql"
    assert slug("The lock review in `make lint`") == "the-lock-review-in-make-lint"


def test_every_relative_link_in_the_docs_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in relative_links(page):
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_is_a_front_door_of_at_most_200_lines() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move the detail to docs/"


def test_every_make_target_is_documented() -> None:
    text = "\n".join(page.read_text() for page in PAGES)
    targets = makefile_targets()
    assert "upgrade" in targets  # the Makefile was read
    undocumented = [name for name in targets if f"`make {name}`" not in text]
    assert not undocumented, f"document these as `make <target>` in README.md or docs/: {undocumented}"


def test_every_summary_in_a_targets_table_is_make_helps() -> None:
    readme = targets_tables(README)
    assert len(readme) >= 8, "the README shows the targets used most, with their summaries"
    summaries = {entry.name: entry.summary for entry in catalog.ENTRIES}
    drifted = [
        f"{page.relative_to(ROOT)}: make {name}: {shown!r} is not {summaries.get(name)!r}"
        for page in PAGES
        for name, shown in targets_tables(page)
        if summaries.get(name) != shown
    ]
    assert not drifted, "\n".join(drifted)
