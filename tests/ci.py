"""The one rule for CI, used by every tier (unit, Arch package, system tests):
CI set to anything non-empty (CI=true, CI=1, ...) means every tier must run, so a
test that cannot run there fails, saying why, instead of skipping."""

from __future__ import annotations

import os


def in_ci() -> bool:
    return os.environ.get("CI", "").strip() != ""
