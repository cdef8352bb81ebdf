"""scripts/apt-repo: each .deb into the suite its version names, indices signed with
the key, the public key beside them, the private key never; bad input refused
with one line and nothing changed. Stand-in .debs of a control file only (the
real package in a repository, installed and upgraded by apt: test_package_lifecycle).

Needs reprepro, gpg, gpgv and dpkg-deb (scripts/host-tools installs them); without
them these tests skip, except in CI (tests/ci.py), where that is a failure.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ci import in_ci

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "system"))
import apt_repo  # noqa: E402

TOP = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> tuple[Path, str]:
    missing = [t for t in ("reprepro", "gpg", "gpgv", "dpkg-deb") if shutil.which(t) is None]
    if missing:
        if in_ci():
            pytest.fail(f"needs {', '.join(missing)}, and CI must run this test", pytrace=False)
        pytest.skip(f"needs {', '.join(missing)} (scripts/host-tools installs them)")
    gnupghome = tmp_path_factory.mktemp("gnupg")
    fpr = apt_repo.signing_key(gnupghome)
    yield gnupghome, fpr
    apt_repo.forget_key(gnupghome)


def apt_repo_run(repo: Path, key: tuple[Path, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(TOP / "scripts" / "apt-repo"), str(repo), "--gnupghome", str(key[0]),
                           "--key", key[1], *args], capture_output=True, text=True, timeout=120)


def packages(repo: Path, suite: str) -> str:
    return (repo / "dists" / suite / "main" / "binary-amd64" / "Packages").read_text()


def verified(repo: Path, suite: str, tmp_path: Path) -> bool:
    """gpgv's verdict on the suite's InRelease with the published key only, as apt's signed-by."""
    keyring = tmp_path / "keyring.gpg"
    subprocess.run(["gpg", "--batch", "--yes", "--dearmor", "-o", str(keyring), str(repo / apt_repo.KEY_FILE)],
                   check=True)
    return subprocess.run(["gpgv", "--keyring", str(keyring), str(repo / "dists" / suite / "InRelease")],
                          capture_output=True).returncode == 0


def test_each_deb_goes_to_its_release_suite_signed(key, tmp_path):
    repo = tmp_path / "repo"
    proc = apt_repo_run(repo, key, str(apt_repo.tiny_deb(tmp_path, "0.2.0+deb13")),
                        str(apt_repo.tiny_deb(tmp_path, "0.2.0+deb12")))
    assert proc.returncode == 0, proc.stderr
    assert "Version: 0.2.0+deb13\n" in packages(repo, "trixie") and "deb12" not in packages(repo, "trixie")
    assert "Version: 0.2.0+deb12\n" in packages(repo, "bookworm") and "deb13" not in packages(repo, "bookworm")
    assert verified(repo, "trixie", tmp_path) and verified(repo, "bookworm", tmp_path)
    assert (repo / apt_repo.KEY_FILE).read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    # What a web server publishes holds no private key.
    for f in repo.rglob("*"):
        assert not f.is_file() or b"PRIVATE KEY" not in f.read_bytes(), f
    # The next version replaces this one in its suite; the same again changes nothing.
    nxt = apt_repo.tiny_deb(tmp_path, "1:0.2.0+next+deb13")
    assert apt_repo_run(repo, key, str(nxt)).returncode == 0
    assert apt_repo_run(repo, key, str(nxt)).returncode == 0
    assert "Version: 1:0.2.0+next+deb13\n" in packages(repo, "trixie") and "Version: 0.2.0+deb13" not in packages(
        repo, "trixie")
    assert verified(repo, "trixie", tmp_path)


def snapshot(repo: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repo.parent)): p.read_bytes() for p in sorted(repo.parent.rglob("*"))
            if p.is_file() and p.parent.name != "debs"}


@pytest.mark.parametrize("case, words", [
    ("no suffix", "version 0.3.0 ends in neither +deb12 (bookworm) nor +deb13 (trixie)"),
    ("debian 11", "version 0.3.0+deb11 ends in neither"),
    ("not a deb", "not a .deb"),
    ("no such file", "no such file"),
    ("short key", "give the signing key's full fingerprint"),
    ("unknown key", "no secret key with that fingerprint"),
    ("not our dir", "not a repository made by scripts/apt-repo"),
    ("older", "trixie has a newer version already (0.2.0+deb13, not 0.1.0+deb13)"),
    ("changed", "the repository has a different file of that name"),
])
def test_bad_input_is_refused_and_changes_nothing(key, tmp_path, case, words):
    debs = tmp_path / "debs"
    debs.mkdir()
    repo = tmp_path / "repo"
    assert apt_repo_run(repo, key, str(apt_repo.tiny_deb(debs, "0.2.0+deb13"))).returncode == 0
    use_key, target, args = key, repo, []
    if case == "no suffix":
        args = [str(apt_repo.tiny_deb(debs, "0.3.0"))]
    elif case == "debian 11":
        args = [str(apt_repo.tiny_deb(debs, "0.3.0+deb11"))]
    elif case == "not a deb":
        (debs / "x.deb").write_text("not a package\n")
        args = [str(debs / "x.deb")]
    elif case == "no such file":
        args = [str(debs / "missing.deb")]
    elif case == "short key":
        use_key = (key[0], key[1][-16:])
    elif case == "unknown key":
        use_key = (key[0], "0" * 40)
    elif case == "not our dir":
        target = tmp_path / "elsewhere"
        target.mkdir()
        (target / "index.html").write_text("a web site\n")
    elif case == "older":
        args = [str(apt_repo.tiny_deb(debs, "0.1.0+deb13"))]
    elif case == "changed":  # the same version, other contents
        args = [str(apt_repo.tiny_deb(debs, "0.2.0+deb13", name="jupyterhub-appliance"))]
        control = debs / "tiny-0.2.0+deb13" / "DEBIAN" / "control"
        control.write_text(control.read_text().replace("a stand-in", "a changed stand-in"))
        subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(control.parent.parent), args[0]], check=True,
                       stdout=subprocess.DEVNULL)
    args = args or [str(apt_repo.tiny_deb(debs, "0.2.1+deb13"))]
    before = snapshot(repo)
    proc = apt_repo_run(target, use_key, *args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("apt-repo: ") and lines[0].endswith("(nothing changed)"), proc.stderr
    assert words in lines[0], lines[0]
    assert snapshot(repo) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["debs", "repo"] + (["elsewhere"] if target != repo
                                                                                      else []))
