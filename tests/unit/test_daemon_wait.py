"""Systemd.wait_for: when a start has finished, judged on the state the job left,
never on one read before the job ran."""

from __future__ import annotations

import asyncio

from appliance.daemon.systemd import Systemd


class Scripted(Systemd):
    """Answers ActiveState and "is the job still there" from scripts, in order."""

    def __init__(self, states: list[str], pending: list[bool]):
        Systemd.__init__(self)
        self.states, self.pending = list(states), list(pending)

    async def active_state(self, unit: str) -> str:
        return self.states.pop(0)

    async def job_pending(self, job: str) -> bool:
        return self.pending.pop(0)


START = ("active", "failed", "inactive")


def wait(states, pending, job="/job/1", timeout=5.0):
    sd = Scripted(states, pending)
    state = asyncio.run(sd.wait_for("jupyter-a.service", START, timeout, job))
    return state, sd.states, sd.pending


def test_a_start_that_finished_between_the_two_reads_is_active_not_inactive():
    # Read "inactive" (job still queued then), the job runs, gone when asked about.
    assert wait(["inactive", "active"], [False]) == ("active", [], [])


def test_a_queued_start_is_waited_for_and_a_real_failure_reported():
    assert wait(["inactive", "inactive", "failed"], [True, False]) == ("failed", [], [])


def test_a_start_that_left_the_unit_inactive_is_inactive():
    assert wait(["inactive", "inactive"], [False]) == ("inactive", [], [])


def test_without_a_job_the_state_is_taken_as_read():
    assert wait(["activating", "inactive"], [], job=None) == ("inactive", [], [])


def test_a_start_still_queued_at_the_deadline_is_inactive():
    assert wait(["inactive"], [True], timeout=0) == ("inactive", [], [])
