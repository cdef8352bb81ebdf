"""scripts/release, run against a throwaway git repository holding a copy of the files
it reads and writes (the repository's own version is never bumped here).

Needs git and dpkg-parsechangelog (dpkg-dev); makepkg for the .SRCINFO comparison.
Without them these tests skip, except in CI (tests/ci.py), where that is a failure.
"""

from __future__ import annotations

import email.utils
import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.ci import in_ci

TOP = Path(__file__).resolve().parents[2]
FILES = [
    "appliance/__init__.py",
    "packaging/debian/changelog",
    "packaging/arch/PKGBUILD",
    "packaging/arch/.SRCINFO",
    "packaging/arch/jupyterhub-appliance.install",
    "packaging/arch/jupyterhub-appliance.changelog",
    "packaging/arch/makepkg.conf",
    "scripts/release",
    "scripts/build-aur",
    "scripts/apt-repo",
]
EPOCH = 1796123400  # Tue, 01 Dec 2026 11:10:00 +0000
DATE = email.utils.format_datetime(datetime.fromtimestamp(EPOCH, timezone.utc))
ENV = {"DEBFULLNAME": "Ada Lovelace", "DEBEMAIL": "ada@example.org", "SOURCE_DATE_EPOCH": str(EPOCH)}


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return
    what = f"needs {', '.join(missing)} (Debian: dpkg-dev, git, makepkg)"
    if in_ci():
        pytest.fail(f"{what}, and CI must run this test", pytrace=False)
    pytest.skip(what)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def back_to_0_1_0(repo: Path) -> None:
    """The copied files as they were at 0.1.0, whatever the repository's version is
    now: the same formats, the later releases' entries taken off the top."""
    init = repo / "appliance/__init__.py"
    current = re.search(r'__version__ = "([^"]+)"', init.read_text()).group(1)
    init.write_text(init.read_text().replace(f'"{current}"', '"0.1.0"'))
    for f in ("packaging/arch/PKGBUILD", "packaging/arch/.SRCINFO"):
        text = (repo / f).read_text()
        (repo / f).write_text(text.replace(f"pkgver={current}\n", "pkgver=0.1.0\n")
                              .replace(f"pkgver = {current}\n", "pkgver = 0.1.0\n")
                              .replace(f"-{current}.tar.gz", "-0.1.0.tar.gz")
                              .replace(f"/v{current}/", "/v0.1.0/"))
    for f, first in (("packaging/debian/changelog", "jupyterhub-appliance (0.1.0)"),
                     ("packaging/arch/jupyterhub-appliance.changelog", "jupyterhub-appliance 0.1.0,")):
        text = (repo / f).read_text()
        (repo / f).write_text(text[text.index(first):])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with the release's files at version 0.1.0 (pkgrel=3), a commit
    that set the version, and one commit after it."""
    require_tools("git", "dpkg-parsechangelog")
    repo = tmp_path / "repo"
    for f in FILES:
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(TOP / f, repo / f)
    back_to_0_1_0(repo)
    for f, old, new in [("packaging/arch/PKGBUILD", "pkgrel=1\n", "pkgrel=3\n"),
                        ("packaging/arch/.SRCINFO", "\tpkgrel = 1\n", "\tpkgrel = 3\n")]:
        text = (repo / f).read_text()
        assert old in text
        (repo / f).write_text(text.replace(old, new))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test Committer")
    git(repo, "config", "user.email", "committer@example.org")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Set up the appliance")
    (repo / "README.md").write_text("readme\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "Fix the spawn page")
    return repo


def release(repo: Path, *args: str, env: dict | None = None, path_prepend: Path | None = None,
            stdin: str | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, **ENV}
    e.pop("EDITOR", None)
    e.pop("VISUAL", None)
    e.update(env or {})
    if path_prepend:
        e["PATH"] = f"{path_prepend}:{e['PATH']}"
    return subprocess.run([str(repo / "scripts" / "release"), *args], cwd=repo, env=e,
                          capture_output=True, text=True, input=stdin, timeout=300)


def state(repo: Path) -> dict:
    """Everything a refused release must leave as it was."""
    files = {str(p.relative_to(repo)): p.read_bytes()
             for p in sorted(repo.rglob("*")) if p.is_file() and ".git" not in p.relative_to(repo).parts}
    return {
        "files": files,
        "head": git(repo, "rev-parse", "HEAD"),
        "index": git(repo, "ls-files", "-s"),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "tags": git(repo, "tag"),
    }


def assert_refused(proc: subprocess.CompletedProcess, before: dict, repo: Path, words: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("release: "), proc.stderr
    assert words in lines[0], proc.stderr
    assert state(repo) == before


def version_of(repo: Path) -> str:
    return re.search(r'^__version__ = "(.*)"$', (repo / "appliance/__init__.py").read_text(), re.M)[1]


def parsechangelog(repo: Path) -> dict[str, str]:
    proc = subprocess.run(["dpkg-parsechangelog", "-l", str(repo / "packaging/debian/changelog")],
                          capture_output=True, text=True, check=True)
    assert proc.stderr == ""
    fields, key = {}, None
    for line in proc.stdout.splitlines():
        if line.startswith(" ") and key:
            fields[key] += "\n" + line[1:]
        else:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def arch_top_entry(repo: Path) -> tuple[str, str]:
    text = (repo / "packaging/arch/jupyterhub-appliance.changelog").read_text()
    header, body = re.match(r"([^\n]*)\n\n(.*?)\n(?:\n|$)", text, re.S).groups()
    return header, body


# --- a good release ---------------------------------------------------------------------


def test_a_good_release_changes_every_file_and_commits(repo):
    old_deb = (repo / "packaging/debian/changelog").read_text()
    old_arch = (repo / "packaging/arch/jupyterhub-appliance.changelog").read_text()
    proc = release(repo, "0.2.0",
                   "-m", "The GPU dashboard shows the last hour of each GPU's utilization and "
                         "every running server with its memory, updated every three seconds.",
                   "-m", "* applctl proxy status says when the certificate expires.")
    assert proc.returncode == 0, proc.stderr
    assert "Release 0.2.0" in proc.stdout

    assert version_of(repo) == "0.2.0"
    pkgbuild = (repo / "packaging/arch/PKGBUILD").read_text()
    assert re.findall(r"^pkgver=.*$", pkgbuild, re.M) == ["pkgver=0.2.0"]
    assert re.findall(r"^pkgrel=.*$", pkgbuild, re.M) == ["pkgrel=1"]
    assert re.findall(r"^changelog=.*$", pkgbuild, re.M) == ["changelog=jupyterhub-appliance.changelog"]
    srcinfo = (repo / "packaging/arch/.SRCINFO").read_text()
    assert "\tpkgver = 0.2.0\n" in srcinfo and "\tpkgrel = 1\n" in srcinfo
    assert ("\tsource = jupyterhub-appliance-0.2.0.tar.gz::https://github.com/jupyterhub-appliance/jupyterhub-appliance"
            "/releases/download/v0.2.0/jupyterhub-appliance-0.2.0.tar.gz\n") in srcinfo
    assert "0.1.0" not in srcinfo

    body = ("  * The GPU dashboard shows the last hour of each GPU's utilization and every\n"
            "    running server with its memory, updated every three seconds.\n"
            "  * applctl proxy status says when the certificate expires.")
    deb = (repo / "packaging/debian/changelog").read_text()
    assert deb == ("jupyterhub-appliance (0.2.0) unstable; urgency=medium\n\n" + body + "\n\n"
                   f" -- Ada Lovelace <ada@example.org>  {DATE}\n\n" + old_deb)
    assert all(len(line) < 80 for line in deb.splitlines()[:8])
    fields = parsechangelog(repo)
    assert fields["Source"] == "jupyterhub-appliance"
    assert fields["Version"] == "0.2.0"
    assert fields["Distribution"] == "unstable"
    assert fields["Maintainer"] == "Ada Lovelace <ada@example.org>"
    assert fields["Date"] == DATE
    arch = (repo / "packaging/arch/jupyterhub-appliance.changelog").read_text()
    assert arch == f"jupyterhub-appliance 0.2.0, 2026-12-01\n\n{body}\n\n" + old_arch

    assert git(repo, "log", "-1", "--format=%s").strip() == "Release 0.2.0"
    assert git(repo, "log", "--format=%s").splitlines()[1] == "Fix the spawn page"
    changed = set(git(repo, "show", "--name-only", "--format=", "HEAD").split())
    assert changed == {"appliance/__init__.py", "packaging/arch/PKGBUILD", "packaging/arch/.SRCINFO",
                       "packaging/debian/changelog", "packaging/arch/jupyterhub-appliance.changelog"}
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(repo, "tag") == ""


def test_srcinfo_is_what_build_aur_makes(repo):
    require_tools("makepkg", "fakeroot")
    assert release(repo, "0.2.0", "-m", "Something new.").returncode == 0
    proc = subprocess.run([str(repo / "scripts/build-aur"), "--srcinfo"], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert git(repo, "status", "--porcelain") == "", "scripts/release left a .SRCINFO build-aur would change"


def test_without_makepkg_the_srcinfo_version_lines_are_written_by_hand(repo, tmp_path):
    require_tools("makepkg", "fakeroot")
    other = tmp_path / "other"
    shutil.copytree(repo, other)
    (other / "scripts/build-aur").write_text("#!/bin/sh\necho 'build-aur: missing: makepkg' >&2\nexit 1\n")
    assert release(repo, "0.2.0", "-m", "Something new.").returncode == 0
    proc = release(other, "0.2.0", "-m", "Something new.")
    assert proc.returncode == 0, proc.stderr
    assert "by hand" in proc.stdout
    assert (other / "packaging/arch/.SRCINFO").read_text() == (repo / "packaging/arch/.SRCINFO").read_text()
    assert not (other / "packaging/arch/.SRCINFO.new").exists()


@pytest.mark.parametrize("part, version", [("--major", "1.0.0"), ("--minor", "0.2.0"), ("--patch", "0.1.1")])
def test_major_minor_patch(repo, part, version):
    proc = release(repo, part, "--no-commit", "-m", "Something new.")
    assert proc.returncode == 0, proc.stderr
    assert version_of(repo) == version
    assert parsechangelog(repo)["Version"] == version
    assert git(repo, "log", "-1", "--format=%s").strip() == "Fix the spawn page"  # not committed


def test_a_pre_release_sorts_before_the_release_for_dpkg(repo):
    proc = release(repo, "0.2.0rc1", "-m", "Try the queue.")
    assert proc.returncode == 0, proc.stderr
    assert version_of(repo) == "0.2.0rc1"
    assert parsechangelog(repo)["Version"] == "0.2.0~rc1"
    assert release(repo, "0.2.0", "-m", "The queue.").returncode == 0
    assert parsechangelog(repo)["Version"] == "0.2.0"


def test_tag_only_when_asked(repo):
    proc = release(repo, "0.2.0", "--tag", "-m", "Something new.")
    assert proc.returncode == 0, proc.stderr
    assert git(repo, "tag").split() == ["v0.2.0"]
    assert git(repo, "rev-parse", "v0.2.0^{commit}") == git(repo, "rev-parse", "HEAD")
    assert git(repo, "cat-file", "-t", "v0.2.0").strip() == "tag"  # annotated


# --- the apt repository (--apt-repo) -----------------------------------------------------------

# The throwaway repository's scripts/build-deb: a stand-in that makes a .deb of this
# version for the release asked (a real build takes minutes; test_apt_repo and
# test_package_lifecycle use scripts/apt-repo on real ones), or fails if told to.
STAND_IN_BUILD_DEB = """#!/bin/sh
set -e
[ -z "$FAIL_BUILD" ] || exit 1
case $2 in trixie) n=13 ;; bookworm) n=12 ;; *) exit 2 ;; esac
v=$(sed -n 's/^__version__ = "\\(.*\\)"$/\\1/p' appliance/__init__.py)+deb$n
d=$DEBS/$v
mkdir -p "$d/DEBIAN"
printf 'Package: jupyterhub-appliance\\nVersion: %s\\nArchitecture: amd64\\nSection: misc\\nPriority: optional\\n' "$v" > "$d/DEBIAN/control"
printf 'Maintainer: T <t@example.org>\\nDescription: a stand-in\\n' >> "$d/DEBIAN/control"
dpkg-deb --root-owner-group -b "$d" "$DEBS/jupyterhub-appliance_${v}_amd64.deb" >/dev/null
echo "$DEBS/jupyterhub-appliance_${v}_amd64.deb"
"""


@pytest.fixture
def signing(repo, tmp_path):
    """A key to sign with, and the stand-in build; root, as scripts/build-deb needs."""
    require_tools("reprepro", "gpg", "dpkg-deb")
    if os.geteuid() != 0:
        pytest.skip("--apt-repo builds as root")
    import apt_repo  # tests/system, on sys.path (tests/conftest.py)
    build = repo / "scripts/build-deb"
    build.write_text(STAND_IN_BUILD_DEB)
    build.chmod(0o755)
    gnupghome = tmp_path / "gnupg"
    fpr = apt_repo.signing_key(gnupghome)
    (tmp_path / "debs").mkdir()
    yield ["--gnupghome", str(gnupghome), "--sign-key", fpr], {"DEBS": str(tmp_path / "debs")}
    apt_repo.forget_key(gnupghome)


def test_apt_repo_gets_the_release_for_debian_12_and_13(repo, signing, tmp_path):
    args, env = signing
    out = tmp_path / "apt"
    proc = release(repo, "0.2.0", "-m", "Something new.", "--apt-repo", str(out), *args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert git(repo, "log", "-1", "--format=%s").strip() == "Release 0.2.0"
    for suite, version in (("bookworm", "0.2.0+deb12"), ("trixie", "0.2.0+deb13")):
        assert f"Version: {version}\n" in (out / f"dists/{suite}/main/binary-amd64/Packages").read_text()
    assert (out / "dists/trixie/InRelease").exists() and (out / "jupyterhub-appliance.asc").exists()
    assert f"publish {out}" in proc.stdout


def test_apt_repo_without_the_key_changes_nothing(repo, signing, tmp_path):
    args, env = signing
    args[-1] = "0" * 40
    before = state(repo)
    assert_refused(release(repo, "0.2.0", "-m", "Something new.", "--apt-repo", str(tmp_path / "apt"), *args,
                           env=env), before, repo, "no secret key with that fingerprint")
    assert not (tmp_path / "apt").exists()


def test_a_failed_build_takes_the_release_back(repo, signing, tmp_path):
    args, env = signing
    before = state(repo)
    assert_refused(release(repo, "0.2.0", "--tag", "-m", "Something new.", "--apt-repo", str(tmp_path / "apt"),
                           *args, env={**env, "FAIL_BUILD": "1"}), before, repo, "scripts/build-deb --release bookworm")
    assert not (tmp_path / "apt").exists()


# --- the entry ------------------------------------------------------------------------------


def test_arch_changelog_has_the_debian_entrys_bullets(repo, tmp_path):
    notes = tmp_path / "notes"
    notes.write_text("* Spawning waits in a queue when\n  every GPU is taken.\n\n"
                     "- Idle GPUs are reclaimed when someone waits.\n\n"
                     "A bullet without a marker, long enough to be wrapped by the script at "
                     "seventy-eight columns, and then some more words.\n")
    proc = release(repo, "0.2.0", "--message-file", str(notes))
    assert proc.returncode == 0, proc.stderr
    changes = parsechangelog(repo)["Changes"]
    deb_bullets = changes.split("\n.\n", 1)[1]  # after the header line and the '.' for a blank line
    header, arch_bullets = arch_top_entry(repo)
    assert header == "jupyterhub-appliance 0.2.0, 2026-12-01"
    assert arch_bullets == deb_bullets
    assert arch_bullets.count("\n  * ") == 2 and arch_bullets.startswith("  * Spawning waits in a queue when every")


def test_editor_template_lists_the_commits_since_the_last_bump(repo, tmp_path):
    editor = tmp_path / "editor"
    seen = tmp_path / "template"
    editor.write_text(f"#!/bin/sh\ncp \"$1\" {seen}\nprintf '* Written in the editor.\\n# dropped\\n' >> \"$1\"\n")
    editor.chmod(0o755)
    proc = release(repo, "0.2.0", env={"EDITOR": str(editor)})
    assert proc.returncode == 0, proc.stderr
    template = seen.read_text()
    assert "#   * Fix the spawn page" in template
    assert "#   * Set up the appliance" not in template  # the bump itself is not listed
    assert all(line.startswith("#") or not line.strip() for line in template.splitlines())
    assert arch_top_entry(repo)[1] == "  * Written in the editor."


# --- refusals: nothing changes ------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.1.0", "0.1", "0.0.9", "0.1.0rc1", "0.1.0.dev3"])
def test_a_version_not_greater_is_refused(repo, version):
    before = state(repo)
    proc = release(repo, version, "-m", "Something new.")
    assert_refused(proc, before, repo, "not greater than the current version 0.1.0")


@pytest.mark.parametrize("version", ["v0.2.0", "0.2.0-1", "0.2.0+local", "abc", "0.2.0rc", "0.02.0",
                                     "0.2.0.RC1", "0.2.0 ", "1!0.2.0", ""])
def test_a_malformed_version_is_refused(repo, version):
    before = state(repo)
    proc = release(repo, version, "-m", "Something new.")
    assert_refused(proc, before, repo, f"'{version}': epochs (N!) are not supported" if version == "1!0.2.0"
                   else f"'{version}' is not a PEP 440 public version in canonical form (e.g. 0.2.0, 1.0rc1,")


@pytest.mark.parametrize("how", ["-m empty", "-m blank", "file", "editor saved as is", "editor failed", "no editor"])
def test_an_empty_entry_is_refused(repo, tmp_path, how):
    before = state(repo)
    notes = tmp_path / "notes"
    notes.write_text("\n   \n\n")
    args, env, words = {
        "-m empty": (["-m", ""], {}, "an empty bullet"),
        "-m blank": (["-m", "Fine.", "-m", "  "], {}, "an empty bullet"),
        "file": (["--message-file", str(notes)], {}, "the entry is empty"),
        "editor saved as is": ([], {"EDITOR": "true"}, "the entry is empty"),
        "editor failed": ([], {"EDITOR": "false"}, "exited with 1"),
        "no editor": ([], {}, "set EDITOR"),
    }[how]
    proc = release(repo, "0.2.0", *args, env=env)
    assert_refused(proc, before, repo, words)
    assert "0.2.0" not in (repo / "packaging/debian/changelog").read_text()


def test_a_changelog_dpkg_cannot_parse_puts_everything_back(repo, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dpkg-parsechangelog").write_text(
        "#!/bin/sh\necho 'dpkg-parsechangelog: warning: badly formatted trailer line' >&2\n")
    (fake / "dpkg-parsechangelog").chmod(0o755)
    before = state(repo)
    proc = release(repo, "0.2.0", "-m", "Something new.", path_prepend=fake)
    assert_refused(proc, before, repo, "dpkg-parsechangelog does not accept")
    assert "nothing changed" in proc.stderr


def test_a_failed_commit_puts_everything_back(repo):
    hook = repo / ".git/hooks/pre-commit"
    hook.write_text("#!/bin/sh\necho 'refused by the hook' >&2\nexit 1\n")
    hook.chmod(0o755)
    before = state(repo)
    assert_refused(release(repo, "0.2.0", "-m", "Something new."), before, repo, "git commit")


def test_an_existing_tag_is_refused(repo):
    git(repo, "tag", "v0.2.0")
    before = state(repo)
    assert_refused(release(repo, "0.2.0", "--tag", "-m", "Something new."), before, repo, "exists already")


def test_uncommitted_changes_to_release_files_are_refused(repo):
    pkgbuild = repo / "packaging/arch/PKGBUILD"
    pkgbuild.write_text(pkgbuild.read_text() + "# local edit\n")
    before = state(repo)
    assert_refused(release(repo, "0.2.0", "-m", "Something new."), before, repo, "packaging/arch/PKGBUILD")


def test_versions_that_disagree_are_refused(repo):
    pkgbuild = repo / "packaging/arch/PKGBUILD"
    pkgbuild.write_text(pkgbuild.read_text().replace("pkgver=0.1.0", "pkgver=0.1.1"))
    git(repo, "commit", "-q", "-am", "Drift")
    before = state(repo)
    assert_refused(release(repo, "0.2.0", "-m", "Something new."), before, repo, "make them agree")


def test_help_says_the_debian_release_suffix_is_added_at_build_time():
    proc = subprocess.run([str(TOP / "scripts/release"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "+deb13" in proc.stdout and "--major" in proc.stdout and "--message-file" in proc.stdout
