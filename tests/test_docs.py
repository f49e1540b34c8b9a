"""The README stays a front door and docs/ stays true: the generated settings page matches the code,
every setting is documented, and every relative link leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from host.cli import main
from host.cli.docs import env_name
from host.config import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SETTINGS_PAGE = DOCS / "settings.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 250

FENCED = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto: ...


def _prose(page: Path) -> str:
    """The page without code blocks and code spans, where brackets are code, not links."""
    return INLINE_CODE.sub("", FENCED.sub("", page.read_text(encoding="utf-8")))


def _links(page: Path) -> list[str]:
    text = _prose(page)
    return [*INLINE_LINK.findall(text), *REFERENCE_LINK.findall(text)]


def _anchors(page: Path) -> set[str]:
    """The heading anchors GitHub gives a page: lower case, punctuation dropped, spaces as hyphens."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCED.sub("", page.read_text(encoding="utf-8")), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def test_the_settings_page_is_what_the_generator_writes() -> None:
    result = CliRunner().invoke(main, ["docs", "settings"])
    assert result.exit_code == 0, result.output
    assert SETTINGS_PAGE.is_file(), "docs/settings.md is missing: run `make docs`"
    assert SETTINGS_PAGE.read_text(encoding="utf-8") == result.output, (
        "docs/settings.md differs from what host/config.py generates: run `make docs` and commit the page"
    )


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_is_documented_by_its_environment_variable(name: str) -> None:
    field = Settings.model_fields[name]
    assert field.description, f"Settings.{name} needs `description=` in host/config.py (then run `make docs`)"
    variable = env_name(name, field)
    assert f"`{variable}`" in SETTINGS_PAGE.read_text(encoding="utf-8"), f"{variable} is not in docs/settings.md"


def test_the_generator_writes_the_page_given_an_output(tmp_path: Path) -> None:
    out = tmp_path / "settings.md"
    result = CliRunner().invoke(main, ["docs", "settings", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").count("\n| `WARDFN_") == len(Settings.model_fields)


def test_the_readme_reads_in_five_minutes() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines < README_MAX_LINES, f"README.md has {lines} lines: move reference material into docs/"


def test_the_readme_links_every_docs_page() -> None:
    linked = {(README.parent / link.split("#")[0]).resolve() for link in _links(README)}
    missing = [page.name for page in DOCS.glob("*.md") if page.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}: add them to its 'Read on' list"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_somewhere(page: Path) -> None:
    links = [link for link in _links(page) if not EXTERNAL.match(link)]
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link} (no such file)")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link} (no such heading in {target.name})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {', '.join(broken)}"


def test_the_link_check_sees_links_and_catches_a_broken_one(tmp_path: Path) -> None:
    # The check above would pass vacuously if the patterns matched nothing.
    page = tmp_path / "page.md"
    page.write_text("# Top\n\n[ok](page.md#top) [gone](nowhere.md) `[code](ignored.md)`\n\n[ref]: other.md\n")
    assert _links(page) == ["page.md#top", "nowhere.md", "other.md"]
    assert _anchors(page) == {"top"}
