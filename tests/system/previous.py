"""The previous version's .deb, for the upgrade test (test_9_upgrade.py): built
from its commit with its own scripts/build-deb, cached by commit. The build starts
in the background when the upgrade test is collected (conftest.py), so its two
minutes overlap the rest of the system tier.
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
# The release it was built for: its build-deb builds on the host, Debian 12.
PREVIOUS_RELEASE = "bookworm"


def _build() -> Path:
    cached = CACHE / "debs" / f"jupyterhub-appliance_{PREVIOUS_VERSION}_{PREVIOUS_REF}.deb"
    if cached.exists():
        return cached
    with tempfile.TemporaryDirectory(prefix="previous-", dir="/var/tmp") as tree:
        archive = subprocess.run(["git", "-C", str(TOP), "archive", PREVIOUS_REF], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        out = subprocess.run([f"{tree}/scripts/build-deb"], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"building {PREVIOUS_VERSION} ({PREVIOUS_REF}) failed:\n{out.stderr[-3000:]}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(out.stdout.strip().splitlines()[-1], cached)
    return cached


def start_in_background() -> Future:
    return debs.in_background("previous-deb", _build)


def deb() -> Path:
    """The previous version's .deb, once built (started now if it was not)."""
    return start_in_background().result()
