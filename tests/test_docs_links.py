"""Every relative link of the README and docs/ leads to a file (and heading) that exists; the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, ...


def _without_code(text: str) -> str:
    """Prose only: examples in code may hold brackets and parentheses that are not links."""
    return FENCE.sub("", text)


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for heading in HEADING.findall(_without_code(page.read_text(encoding="utf-8"))):
        base = anchor = _anchor(heading)
        n = 0
        while anchor in found:  # GitHub numbers repeated headings: name, name-1, name-2
            n += 1
            anchor = f"{base}-{n}"
        found.add(anchor)
    return found


def relative_links(page: Path) -> list[str]:
    prose = INLINE_CODE.sub("", _without_code(page.read_text(encoding="utf-8")))
    return [target for target in LINK.findall(prose) if not EXTERNAL.match(target)]


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """The links of one page whose file (inside ``root``), or heading within it, does not exist."""
    broken = []
    for target in relative_links(page):
        path_part, _, fragment = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.is_relative_to(root) or not destination.exists():
            broken.append(f"{target}: no such file")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(f"{target}: no heading #{fragment} in {destination.relative_to(root)}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    """A reader who follows a link in the README or docs/ lands on a file and heading that exist."""
    assert page.exists()
    assert broken_links(page) == []


def test_the_link_check_sees_a_broken_link(tmp_path: Path) -> None:
    """The check is not blind: a missing file, a missing heading and a way out of the repository are reported."""
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# The `top` (view)\n\n[ok](#the-top-view) [up](../docs/page.md#the-top-view) [file](nothing.md)\n"
        "[heading](#nowhere) [out](../../etc/passwd) `[code](skipped.md)`\n```\n[code](skipped.md)\n```\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "nothing.md: no such file",
        "#nowhere: no heading #nowhere in docs/page.md",
        "../../etc/passwd: no such file",
    ]


def test_readme_is_a_front_page() -> None:
    """The README stays a front page of at most 200 lines; the details live in docs/."""
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move details to docs/"


def test_readme_names_the_test_command() -> None:
    """CI and newcomers find the test command in the README, as a command line of its own."""
    commands = [line.split("#")[0].strip() for line in README.read_text(encoding="utf-8").splitlines()]
    assert "scripts/test" in commands
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


TOP_FOLDERS = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith("."))
NAMED_PATH = re.compile(rf"`((?:{'|'.join(map(re.escape, TOP_FOLDERS))})/[^`\s*]*)`")
MODULE_RUN = re.compile(rf"python -m ((?:{'|'.join(map(re.escape, TOP_FOLDERS))})(?:\.\w+)*)")


def _module_exists(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_named_paths_and_modules_exist(page: Path) -> None:
    """A file, folder or ``python -m`` module the docs name is where they say, after any move of the code."""
    text = page.read_text(encoding="utf-8")
    missing = [path for path in NAMED_PATH.findall(text) if not (ROOT / path).exists()]
    missing += [f"python -m {module}" for module in MODULE_RUN.findall(text) if not _module_exists(module)]
    assert missing == []


def test_testing_page_lists_every_test_folder() -> None:
    """docs/testing.md's layout table names each folder of tests/, and only folders that exist."""
    section = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8").split("## Layout", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    listed = {name for cell in first_cells for name in re.findall(r"`(\w+)/`", cell)}
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and any(p.glob("*.py"))}
    assert listed == folders
