"""The reclaim policy: which idle GPU servers to stop, and only when it helps."""

import pytest

from appliance.gpu.reclaim import victims

IDLE = {"alice": (4000.0, 1), "bob": (2000.0, 1), "carol": (100.0, 1), "dave": (5000.0, 2)}


def test_never_and_always():
    assert victims("never", IDLE, 1800, 0, [1]) == []
    assert victims("always", IDLE, 1800, 0, []) == ["dave", "alice", "bob"]


def test_when_needed_stops_only_as_many_as_the_queue_needs_longest_idle_first():
    assert victims("when-needed", IDLE, 1800, 0, []) == []
    assert victims("when-needed", IDLE, 1800, 0, [1]) == ["dave"]
    assert victims("when-needed", IDLE, 1800, 1, [1]) == []  # a GPU is free already
    assert victims("when-needed", IDLE, 1800, 0, [1, 1, 1]) == ["dave", "alice"]


def test_a_waiter_that_cannot_be_served_takes_nothing_but_later_ones_may():
    idle = {"alice": (4000.0, 1)}
    assert victims("when-needed", idle, 1800, 0, [2, 1]) == ["alice"]
    assert victims("when-needed", idle, 1800, 0, [2]) == []


def test_cpu_only_and_not_yet_idle_servers_are_never_chosen():
    assert victims("always", {"eve": (9999.0, 0), "carol": (100.0, 1)}, 1800, 0, [1]) == []


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="when-needed"):
        victims("sometimes", IDLE, 1800, 0, [])
