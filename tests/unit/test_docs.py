"""The documentation builds: `mkdocs build --strict` of docs/ (mkdocs.yml) with no
warning, so a broken link, a missing page or anchor, or a page left out of the nav
fails CI; and README.md, the quick start outside the site, links only to pages and
anchors that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

TOP = Path(__file__).resolve().parents[2]
MKDOCS = Path(sys.executable).with_name("mkdocs")
# [text](target) and ![alt](target); code spans and blocks are removed first.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    assert MKDOCS.exists(), "mkdocs is not in the test venv: it is pinned in requirements/test.txt (scripts/test installs it)"
    return subprocess.run([str(MKDOCS), "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
                          capture_output=True, text=True, cwd=config.parent)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    proc = build(TOP / "mkdocs.yml", site)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "WARNING" not in output, output
    return site


def nav_pages() -> list[str]:
    config = yaml.load((TOP / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    pages = []
    for entry in config["nav"]:
        pages += list(entry.values()) if isinstance(entry, dict) else [entry]
    return pages


def links(markdown: str) -> list[str]:
    assert len(re.findall(r"^```", markdown, flags=re.M)) % 2 == 0, "a code block is not closed"
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return LINK.findall(text)


def test_the_site_builds_strictly_without_a_warning(site):
    assert (site / "index.html").exists()
    config = yaml.load((TOP / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    assert config["strict"] == "true"
    assert config["validation"] == {key: "warn" for key in
                                    ("omitted_files", "absolute_links", "unrecognized_links", "anchors")}


def test_every_page_is_in_the_nav():
    pages = sorted(p.relative_to(TOP / "docs").as_posix() for p in (TOP / "docs").rglob("*.md"))
    assert sorted(nav_pages()) == pages


@pytest.mark.parametrize("broken", ["[gone](no-such-page.md)", "[gone](security.md#no-such-anchor)",
                                    "[gone](#no-such-anchor)"])
def test_a_broken_link_fails_the_build(tmp_path, broken):
    """What the strict build is for: a copy of the docs with one broken link fails."""
    shutil.copytree(TOP / "docs", tmp_path / "docs")
    shutil.copy(TOP / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with (tmp_path / "docs" / "upgrades.md").open("a") as f:
        f.write(f"\nSee {broken}.\n")
    proc = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Aborted with 1 warnings in strict mode" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_readme_links_resolve(site):
    """README.md is not part of the site: its relative links must name files that
    exist, and its anchors into docs/ anchors the built pages have."""
    wrong = []
    for target in links((TOP / "README.md").read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        if not (TOP / path).exists():
            wrong.append(f"{target}: no such file")
        elif anchor:
            assert path.startswith("docs/") and path.endswith(".md"), f"{target}: an anchor outside docs/"
            html = (site / path.removeprefix("docs/")).with_suffix(".html").read_text()
            if f'id="{anchor}"' not in html:
                wrong.append(f"{target}: no such anchor in the built page")
    assert not wrong, wrong


def test_readme_links_to_every_page_of_the_guide():
    linked = {t.partition("#")[0] for t in links((TOP / "README.md").read_text())}
    missing = [page for page in nav_pages() if f"docs/{page}" not in linked]
    assert not missing, f"README.md does not link to {missing}"


def test_readme_is_the_quick_start():
    readme = (TOP / "README.md").read_text()
    assert len(readme.splitlines()) <= 200, "README.md is the quick start: the guide is docs/"
    assert readme.splitlines()[2:6] == [
        "```",
        "sudo scripts/run-appliance        # build the .deb, boot it in a Debian 13 container, print the URL and a test login",
        "sudo scripts/test                 # all the tests: unit, Arch package, system tests on booted Debian 13 and 12, a real-kernel VM",
        "```"]
