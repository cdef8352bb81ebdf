"""Older versions' .debs, each built from its commit with that commit's own
scripts/build-deb and cached by commit: the previous version for the upgrade test
(tests/packaging/test_upgrade.py), any other ref for scripts/bench-spawn's comparison with an
older package (--then-ref). A build starts in the background (start_in_background),
so its two minutes overlap other work: for the upgrade test, from when it is
collected (booted.py), so the rest of the system tier runs meanwhile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from concurrent.futures import Future
from pathlib import Path

import debs
from container import CACHE

TOP = Path(__file__).resolve().parents[2]
# The previous version, as machines run it: its last commit before the release
# that replaced it. Whoever cuts a release (scripts/release) moves these on.
PREVIOUS_VERSION, PREVIOUS_REF = "0.1.0", "aec0f2d"
# The release these older commits' build-deb builds for: the host's, Debian 12
# (--release came later).
PREVIOUS_RELEASE = "bookworm"


def commit_of(ref: str) -> str:
    """The abbreviated commit a ref names (what the cache is keyed by)."""
    return subprocess.run(["git", "-C", str(TOP), "rev-parse", "--short=7", f"{ref}^{{commit}}"],
                          capture_output=True, text=True, check=True).stdout.strip()


def _build(ref: str) -> Path:
    commit = commit_of(ref)
    # jupyterhub-appliance_<its version>_<commit>.deb
    cached = sorted((CACHE / "debs").glob(f"jupyterhub-appliance_*_{commit}.deb"))
    if cached:
        return cached[0]
    with tempfile.TemporaryDirectory(prefix=f"ref-{commit}-", dir="/var/tmp") as tree:
        archive = subprocess.run(["git", "-C", str(TOP), "archive", commit], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        out = subprocess.run([f"{tree}/scripts/build-deb"], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"building {ref} ({commit}) failed:\n{out.stderr[-3000:]}")
        built = Path(out.stdout.strip().splitlines()[-1])  # dist/jupyterhub-appliance_<version>_amd64.deb
        version = built.name.split("_")[1]
        target = CACHE / "debs" / f"jupyterhub-appliance_{version}_{commit}.deb"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(built, target.with_suffix(".tmp"))
        target.with_suffix(".tmp").rename(target)  # never a half-copied .deb in the cache
    return target


def start_in_background(ref: str = PREVIOUS_REF) -> Future:
    return debs.in_background(f"deb-{ref}", lambda: _build(ref), one_at_a_time=True)


def deb(ref: str = PREVIOUS_REF) -> Path:
    """The .deb of `ref` (by default the previous version), once built (started now
    if it was not)."""
    return start_in_background(ref).result()
