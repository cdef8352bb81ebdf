"""One rule for CI in every tier: any non-empty CI means every tier must run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.ci import in_ci

TESTS = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value, ci", [("true", True), ("1", True), ("yes", True), ("false", True),
                                       ("", False), ("  ", False), (None, False)])
def test_any_non_empty_ci_means_every_tier_runs(monkeypatch, value, ci):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert in_ci() is ci


def test_every_tier_asks_the_one_helper():
    readers = [p.relative_to(TESTS).as_posix() for p in TESTS.rglob("*.py")
               if re.search(r"""environ(\.get)?[\[(]\s*["']CI["']""", p.read_text())]
    assert readers == ["ci.py"]
