"""scripts/build-aur --aur: the release tarball and the files pushed to the AUR.

Each test runs the work tree's scripts/build-aur in a clone of this repository at
HEAD, so uncommitted changes elsewhere do not matter. makepkg --verifysource fetches
the wheels into a SRCDEST seeded from scripts/build-aur's cache when there is one
(the rest are downloaded). Without makepkg or git these tests skip; in CI they
fail (tests/ci.py).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from test_arch_package import TOP, kv_file, makepkg_in_copy, require_tools

pytestmark = pytest.mark.arch

NAME = "jupyterhub-appliance"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def clone(dest: Path) -> Path:
    """A clone of this repository at HEAD, with the work tree's scripts/build-aur."""
    require_tools("git", "makepkg", "gzip")
    git(TOP, "clone", "-q", str(TOP), str(dest))
    git(dest, "checkout", "-q", "--detach", git(TOP, "rev-parse", "HEAD").strip())
    git(dest, "config", "user.name", "Test Committer")
    git(dest, "config", "user.email", "committer@example.org")
    shutil.copy2(TOP / "scripts" / "build-aur", dest / "scripts" / "build-aur")
    return dest


def build_aur(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / "scripts" / "build-aur"), "--aur", *args],
                          capture_output=True, text=True, timeout=600)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> dict:
    """build-aur --aur HEAD, twice, into two directories."""
    repo = clone(tmp_path_factory.mktemp("aur") / "repo")
    runs = []
    for out in ("out1", "out2"):
        proc = build_aur(repo, "HEAD", "--out", str(repo.parent / out))
        assert proc.returncode == 0, proc.stderr[-4000:]
        tarball, aur = (Path(line) for line in proc.stdout.split())
        runs.append((tarball, aur, proc.stderr))
    version = re.search(r'^__version__ = "(.+)"$', git(repo, "show", "HEAD:appliance/__init__.py"), re.M)[1]
    return {"repo": repo, "runs": runs, "version": version}


def test_tarball_is_reproducible_and_named_for_the_release(published):
    (t1, aur, log), (t2, _, _) = published["runs"]
    prefix = f"{NAME}-{published['version']}"
    assert t1.name == f"{prefix}.tar.gz" and t1.parent == aur.parent
    assert t1.read_bytes() == t2.read_bytes(), "two runs made different tarballs"
    with tarfile.open(t1) as tf:
        names = tf.getnames()
        assert all(n == prefix or n.startswith(f"{prefix}/") for n in names), names[:5]
        inside = tf.extractfile(f"{prefix}/packaging/arch/PKGBUILD").read().decode()
    # The tarball holds the in-tree PKGBUILD (SKIP); the AUR's differs only by the sum.
    assert inside == git(published["repo"], "show", "HEAD:packaging/arch/PKGBUILD")
    pkgbuild = (aur / "PKGBUILD").read_text()
    assert pkgbuild == inside.replace("sha256sums=('SKIP'", f"sha256sums=('{sha256(t1)}'", 1)
    # What to upload where.
    assert f"upload {t1} to the GitHub release v{published['version']}" in log


def test_aur_files_carry_the_tarballs_sum(published):
    tarball, aur, _ = published["runs"][0]
    assert sorted(p.name for p in aur.iterdir()) == sorted(
        [".SRCINFO", "PKGBUILD", f"{NAME}.install", f"{NAME}.changelog"])
    assert "SKIP" not in (aur / ".SRCINFO").read_text()
    sums = re.search(r"^sha256sums=\((.*?)\)", (aur / "PKGBUILD").read_text(), re.M | re.S)[1]
    assert "SKIP" not in sums
    info = kv_file((aur / ".SRCINFO").read_text())
    assert info["sha256sums"][0] == sha256(tarball)
    assert info["source"][0] == (f"{tarball.name}::https://github.com/jupyterhub-appliance/jupyterhub-appliance"
                                 f"/releases/download/v{published['version']}/{tarball.name}")
    for name in (f"{NAME}.install", f"{NAME}.changelog"):
        assert (aur / name).read_text() == git(published["repo"], "show", f"HEAD:packaging/arch/{name}")


def test_srcinfo_is_makepkgs(published):
    _, aur, _ = published["runs"][0]
    proc = makepkg_in_copy([aur / "PKGBUILD", aur / f"{NAME}.install", aur / f"{NAME}.changelog"], "--printsrcinfo")
    assert proc.returncode == 0, proc.stderr
    assert (aur / ".SRCINFO").read_text() == proc.stdout


def wheel_cache() -> Path | None:
    """scripts/build-aur's cache of downloaded sources, if there is one."""
    try:
        home = pwd.getpwnam("appliance-build").pw_dir if os.geteuid() == 0 else os.environ["HOME"]
    except (KeyError, OSError):
        return None
    cache = Path(home) / ".cache" / f"{NAME}-sources"
    return cache if cache.is_dir() else None


def test_makepkg_verifies_every_source(published):
    """What an AUR user's makepkg does first: fetch every source and check its sum."""
    tarball, aur, _ = published["runs"][0]
    sources = kv_file((aur / ".SRCINFO").read_text())["source"]
    files = [s.split("::")[0] if "::" in s else s.rsplit("/", 1)[-1] for s in sources]
    srcdest = Path(tempfile.mkdtemp(prefix="appliance-aur-srcdest-", dir="/var/tmp"))
    try:
        shutil.copy(tarball, srcdest)
        cache = wheel_cache()
        for f in files[1:]:
            if cache and (cache / f).is_file():
                shutil.copy(cache / f, srcdest)  # makepkg checks these too
        os.chmod(srcdest, 0o755)
        if os.geteuid() == 0:  # makepkg_in_copy runs as nobody, which downloads the rest here
            for p in (srcdest, *srcdest.iterdir()):
                shutil.chown(p, "nobody")
        proc = makepkg_in_copy([aur / "PKGBUILD", aur / f"{NAME}.install", aur / f"{NAME}.changelog"],
                               "--verifysource", "--nocolor", srcdest=srcdest, timeout=1800)
    finally:
        shutil.rmtree(srcdest, ignore_errors=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    passed = {m for m in re.findall(r"^\s+(\S+) \.\.\. Passed$", out, re.M)}
    assert passed == set(files), f"not verified: {sorted(set(files) - passed)[:10]}"


def test_refuses_a_version_mismatch_and_a_missing_ref(tmp_path):
    repo = clone(tmp_path / "repo")
    init = repo / "appliance" / "__init__.py"
    init.write_text(re.sub(r'^__version__ = ".*"$', '__version__ = "9.9.9"', init.read_text(), flags=re.M))
    git(repo, "commit", "-q", "-am", "Bump the version without the PKGBUILD")
    for ref, words in (("HEAD", "has pkgver=0.2.0, appliance/__init__.py has 9.9.9: release with scripts/release"),
                       ("no-such-ref", "no commit 'no-such-ref'")):
        proc = build_aur(repo, ref, "--out", str(tmp_path / "out"))
        assert proc.returncode == 1, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("build-aur: ") and words in lines[0], proc.stderr
    assert not (tmp_path / "out").exists(), "a refused run wrote files"
