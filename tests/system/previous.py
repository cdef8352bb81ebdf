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
import threading
from concurrent.futures import Future
from pathlib import Path

from container import CACHE

TOP = Path(__file__).resolve().parents[2]
# The previous version, as machines run it: its last commit before the release
# that replaced it. Whoever cuts a release (scripts/release) moves these on.
PREVIOUS_VERSION, PREVIOUS_REF = "0.1.0", "aec0f2d"

_lock = threading.Lock()
_future: Future | None = None


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


def start_in_background() -> None:
    global _future
    with _lock:
        if _future is None:
            _future = Future()
            threading.Thread(target=_run, args=(_future,), name="previous-deb", daemon=True).start()


def _run(future: Future) -> None:
    try:
        future.set_result(_build())
    except BaseException as e:  # handed to the test that waits for it
        future.set_exception(e)


def deb() -> Path:
    """The previous version's .deb, once built (started now if it was not)."""
    start_in_background()
    assert _future is not None
    return _future.result()
