"""The documentation holds together: README.md and docs/*.md link only to what exists (pages,
headings, files), README lists every page, every Python block is an example program or says it
is a fragment, and the example TOML is valid configuration."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from relay.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.py"))
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text without its fenced code blocks."""
    return FENCE.sub("", text)


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings."""
    seen: dict[str, int] = {}
    result = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(page.read_text()), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def code_blocks(page: Path) -> list[tuple[str, str]]:
    """(info string, content) of each fenced block."""
    return [(info.strip(), body) for info, body in FENCE.findall(page.read_text())]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_leads_somewhere(page: Path) -> None:
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in anchors(linked)
        ):
            broken.append(target)
    assert broken == []


def test_the_readme_lists_every_page() -> None:
    linked = {
        (ROOT / target.partition("#")[0]).resolve() for target in LINK.findall(README.read_text())
    }
    assert [p.name for p in PAGES[1:] if p not in linked] == []


def test_every_python_block_is_an_example_program_or_a_fragment() -> None:
    """A block marked "python fragment" need not run; any other is the whole text of a file
    of docs/examples, which tests/docs/test_examples.py runs."""
    programs = {example.read_text() for example in EXAMPLES}
    loose = [
        (page.name, body.splitlines()[0] if body else "")
        for page in PAGES
        for info, body in code_blocks(page)
        if info.split()[:1] == ["python"] and info != "python fragment" and body not in programs
    ]
    assert loose == []


def test_every_example_is_in_the_tour_and_every_one_named_exists() -> None:
    named = {
        name for page in PAGES for name in re.findall(r"docs/examples/(\w+\.py)", page.read_text())
    }
    assert named <= {example.name for example in EXAMPLES}
    tour = README.read_text()
    assert [e.name for e in EXAMPLES if f"python docs/examples/{e.name}" not in tour] == []


def test_the_example_settings_files_are_valid(tmp_path: Path) -> None:
    """Each TOML block loads as settings, once the files it names exist."""
    blocks = [body for page in PAGES for info, body in code_blocks(page) if info == "toml"]
    assert blocks
    for body in blocks:
        values = tomllib.loads(body)
        for key in ("tls_cert", "tls_key"):
            if key in values:
                values[key] = str(tmp_path / key)
                (tmp_path / key).touch()
        load_settings({}, **values)  # raises ConfigError naming a bad or unknown key


def test_the_readme_sets_up_with_two_commands() -> None:
    """One runs the server with its embedded defaults, one runs the tests; both scripts exist
    (tests/scripts/test_serve.py runs the first, CI the second)."""
    setup = README.read_text().partition("## Set up")[2]
    info, body = FENCE.findall(setup)[0]
    commands = [line.partition("#")[0].strip() for line in body.splitlines()]
    assert (info, commands) == ("sh", ["scripts/serve", "scripts/test"])
    assert all((ROOT / command).is_file() for command in commands)
