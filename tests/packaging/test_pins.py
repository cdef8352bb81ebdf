"""The hashes of the pinned requirements and the Arch package's sources agree.

scripts/pin-hashes writes both from the files it downloads: requirements/{hub,user,
build}.txt get a --hash for each file, packaging/arch/PKGBUILD (python 3.13) and
packaging/arch/sources-python3.11 list those files by URL with their sha256sums. A pin
changed by hand, without running it, fails here (and pip --require-hashes would refuse
the build).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
ARCH = TOP / "packaging" / "arch"
HASHED = ["hub.txt", "user.txt", "build.txt"]
PYTHONS = {"3.13": ARCH / "PKGBUILD", "3.11": ARCH / "sources-python3.11"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(name: str) -> dict[str, tuple[str, list[str]]]:
    """normalized name -> (version, sha256 hashes), read as pip reads the file."""
    text = (TOP / "requirements" / name).read_text().replace("\\\n", " ")
    out = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", words[0])
        assert m, f"{name}: not a name==version pin: {line}"
        hashes = [w.removeprefix("--hash=sha256:") for w in words[1:]]
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), f"{name}: {line}"
        assert len(words[1:]) == len(hashes)
        out[normalize(m.group(1))] = (m.group(2), hashes)
    return out


def arrays(path: Path) -> dict[str, list[str]]:
    """source, noextract, sha256sums, _python and url as bash sees them."""
    prelude = "" if path.name == "PKGBUILD" else f'source "{ARCH / "PKGBUILD"}"; '
    script = (prelude + f'source "{path}"; '
              'for a in source noextract sha256sums; do declare -n v=$a; printf "%s\\0" "$a" "${#v[@]}" "${v[@]}"; done; '
              'printf "%s\\0" _python 1 "$_python" url 1 "$url"')
    raw = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split("\0")
    out, i = {}, 0
    while i < len(raw) - 1:
        key, n = raw[i], int(raw[i + 1])
        out[key] = raw[i + 2:i + 2 + n]
        i += 2 + n
    return out


def wheel_fits(filename: str, python: str) -> bool:
    """Would CPython <python> on manylinux x86_64 install this wheel?"""
    *_, pytags, abitags, plattags = filename[:-4].split("-")
    cp = int(python.replace(".", ""))
    if not (plattags == "any" or all(re.fullmatch(r"manylinux(_2_\d+|1|2010|2014)_x86_64", p)
                                     for p in plattags.split("."))):
        return False
    for py in pytags.split("."):
        if py in ("py3", f"py{cp}") and abitags == "none":
            return True
        if py == f"cp{cp}" and abitags in (f"cp{cp}", "abi3", "none"):
            return True
        if abitags == "abi3" and re.fullmatch(r"cp3\d+", py) and int(py[2:]) <= cp:
            return True
    return False


def test_every_shipped_pin_has_a_hash():
    for name in HASHED:
        pins = requirements(name)
        assert pins, name
        unhashed = [p for p, (_, hashes) in pins.items() if not hashes]
        assert not unhashed, f"requirements/{name}: no --hash for {unhashed} (run scripts/pin-hashes)"
    # The packages install them with --require-hashes.
    assert "--require-hashes" in (TOP / "scripts" / "stage-tree").read_text()


@pytest.mark.parametrize("python", sorted(PYTHONS))
def test_arch_sources_are_the_pinned_files(python):
    pins: dict[str, tuple[str, list[str]]] = {}
    for name in HASHED:
        for key, value in requirements(name).items():
            assert pins.setdefault(key, value) == value, f"{key} pinned twice, differently"
    a = arrays(PYTHONS[python])
    assert a["_python"] == [python]
    source, sums, noextract = a["source"], a["sha256sums"], a["noextract"]
    assert len(source) == len(sums) == len(noextract) + 1, (len(source), len(sums), len(noextract))
    # First the release tarball, the GitHub release's asset (scripts/build-aur --aur
    # makes it), under the name build-aur gives the work tree's tarball; its sum is
    # SKIP in the repository, the PKGBUILD being inside it.
    version = re.search(r'^__version__ = "(.+)"$', (TOP / "appliance" / "__init__.py").read_text(), re.M).group(1)
    tarball = f"jupyterhub-appliance-{version}.tar.gz"
    assert source[0] == f"{tarball}::{a['url'][0]}/releases/download/v{version}/{tarball}", source[0]
    assert sums[0] == "SKIP"
    seen = {}
    for url, sha in zip(source[1:], sums[1:], strict=False):
        filename = url.rsplit("/", 1)[1]
        assert re.fullmatch(r"https://files\.pythonhosted\.org/packages/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]+/" + re.escape(filename), url), url
        assert filename.endswith(".whl"), f"{filename}: an sdist would need its build backend in package()"
        assert wheel_fits(filename, python), f"{filename} is not for CPython {python} on manylinux x86_64"
        name, version = filename.split("-")[:2]
        key = normalize(name)
        assert key in pins, f"{filename}: not pinned in requirements/{{hub,user,build}}.txt"
        assert key not in seen, f"two files of {key}: {seen[key]}, {filename}"
        seen[key] = filename
        assert normalize(version) == normalize(pins[key][0]), f"{filename}, but the pin is {key}=={pins[key][0]}"
        assert sha in pins[key][1], f"{filename}: its sha256sum is not among the pin's hashes"
    assert noextract == [u.rsplit("/", 1)[1] for u in source[1:]], "noextract= must name every wheel"
    assert not set(pins) - set(seen), f"pinned, but not among the sources: {sorted(set(pins) - set(seen))}"


def test_every_hash_is_of_a_listed_file():
    """No stale hashes: each --hash is of a file one of the targets installs."""
    listed = set()
    for python in PYTHONS:
        listed |= set(arrays(PYTHONS[python])["sha256sums"][1:])
    for name in HASHED:
        for key, (version, hashes) in requirements(name).items():
            stale = set(hashes) - listed
            assert not stale, f"requirements/{name}: {key}=={version} has hashes of no listed file: {stale}"
