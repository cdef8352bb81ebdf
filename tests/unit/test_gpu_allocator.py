"""GPU allocation policy, errors, quotas and thread safety."""
from __future__ import annotations

import logging
import threading
import time

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from appliance.gpu import allocator as allocator_module
from appliance.gpu.allocator import (Allocator, CapacityError, QuotaError, check_request,
                                     choose_gpus, quota_for)
from appliance.gpu.inventory import GPU

GiB = 2**30


def gpu(index: int, free_gib: int = 80, minor: int | None = None) -> GPU:
    return GPU(index=index, minor=index if minor is None else minor, uuid=f"GPU-{index}",
               name="NVIDIA A100", memory_total=80 * GiB, memory_free=free_gib * GiB,
               memory_used=(80 - free_gib) * GiB, pci_bus_id=f"00000000:0{index}:00.0",
               utilization=0, mig_enabled=False)


FOUR = [gpu(0), gpu(1), gpu(2), gpu(3)]


# --- policy -------------------------------------------------------------------

def test_policy_most_free_memory_first_ties_by_lowest_index() -> None:
    gpus = [gpu(0, 10), gpu(1, 70), gpu(2, 70), gpu(3, 40)]
    assert [g.index for g in choose_gpus(gpus, 4)] == [1, 2, 3, 0]
    assert [g.index for g in choose_gpus(list(reversed(gpus)), 2)] == [1, 2]
    assert choose_gpus(gpus, 0) == []


def test_assign_follows_policy_and_skips_held_gpus() -> None:
    gpus = [gpu(0, 10), gpu(1, 70), gpu(2, 70), gpu(3, 40)]
    a = Allocator()
    assert a.assign("jupyter-ann", 1, gpus) == ("GPU-1",)
    assert a.assign("jupyter-bob", 2, gpus) == ("GPU-2", "GPU-3")
    assert a.assign("jupyter-cat", 1, gpus) == ("GPU-0",)
    assert a.holder_of("GPU-2") == "jupyter-bob" and a.holder_of("GPU-9") is None


# --- assign / release -------------------------------------------------------------

def test_assign_is_idempotent_for_the_same_owner_and_count() -> None:
    a = Allocator()
    first = a.assign("u1", 2, FOUR)
    assert a.assign("u1", 2, FOUR) == first
    assert len(a.free_gpus(FOUR)) == 2
    with pytest.raises(ValueError, match="already holds 2 GPUs"):
        a.assign("u1", 1, FOUR)
    with pytest.raises(ValueError):
        a.assign("u1", 0, FOUR)


def test_count_zero_takes_nothing() -> None:
    a = Allocator()
    assert a.assign("cpu-only", 0, FOUR) == ()
    assert a.holdings() == {} and len(a.free_gpus(FOUR)) == 4


@pytest.mark.parametrize("count", [-1, 1.0, True, "1"])
def test_assign_rejects_bad_counts(count: object) -> None:
    with pytest.raises(ValueError):
        Allocator().assign("u1", count, FOUR)  # type: ignore[arg-type]


def test_release_frees_the_gpus() -> None:
    a = Allocator()
    held = a.assign("u1", 3, FOUR)
    assert a.release("u1") == held
    assert a.release("u1") == ()
    assert a.holdings() == {} and a.free_gpus(FOUR) == FOUR


def test_holdings_is_a_copy() -> None:
    a = Allocator()
    a.assign("u1", 1, FOUR)
    a.holdings().clear()
    assert a.holder_of("GPU-0") == "u1"


# --- capacity errors ----------------------------------------------------------------

def test_capacity_error_when_all_busy() -> None:
    a = Allocator()
    a.assign("u1", 4, FOUR)
    with pytest.raises(CapacityError) as e:
        a.assign("u2", 2, FOUR)
    assert (e.value.requested, e.value.free) == (2, 0)
    assert str(e.value) == ("All GPUs are busy: you asked for 2 GPUs, none is free. "
                            "Start a CPU-only server or try again later.")
    assert a.holder_of("GPU-0") == "u1" and "u2" not in a.holdings()


def test_capacity_error_when_not_enough_free() -> None:
    a = Allocator()
    a.assign("u1", 3, FOUR)
    with pytest.raises(CapacityError) as e:
        a.assign("u2", 2, FOUR)
    assert (e.value.requested, e.value.free) == (2, 1)
    assert str(e.value) == ("Not enough free GPUs: you asked for 2 GPUs, 1 is free. "
                            "Ask for fewer, start a CPU-only server or try again later.")


def test_capacity_error_on_a_host_without_gpus_or_too_few() -> None:
    with pytest.raises(CapacityError, match="^This server has no usable GPU: you asked for 1 GPU. "
                                            "Start a CPU-only server.$"):
        Allocator().assign("u1", 1, [])
    with pytest.raises(CapacityError, match="this server has only 4 GPUs"):
        Allocator().assign("u1", 5, FOUR)


# --- quotas ------------------------------------------------------------------------

def test_quota_user_override_wins_even_when_lower() -> None:
    assert quota_for("ann", ["ml"], default=1, per_group={"ml": 4}, per_user={"ann": 0}) == 0
    assert quota_for("ann", ["ml"], default=1, per_group={"ml": 4}, per_user={"ann": 2}) == 2


def test_quota_is_the_most_generous_group() -> None:
    assert quota_for("bob", ["students", "ml", "other"], default=1,
                     per_group={"students": 1, "ml": 3, "staff": 8}, per_user={"ann": 0}) == 3


def test_quota_default() -> None:
    assert quota_for("cat", ["other"], default=1, per_group={"ml": 3}, per_user={}) == 1
    assert quota_for("cat", [], default=0, per_group={}, per_user={}) == 0


def test_check_request() -> None:
    check_request(2, 2)
    check_request(0, 0)
    with pytest.raises(QuotaError) as e:
        check_request(3, 2)
    assert (e.value.requested, e.value.quota) == (3, 2)
    assert str(e.value) == "You asked for 3 GPUs; your quota is 2 GPUs."
    assert str(QuotaError(1, 0)) == "You asked for 1 GPU; your quota is 0 GPUs."
    with pytest.raises(ValueError, match="0 or more"):
        check_request(-1, 5)


# --- rebuild -----------------------------------------------------------------------

def test_rebuild_replaces_state_and_never_double_books(caplog: pytest.LogCaptureFixture) -> None:
    a = Allocator()
    a.assign("stale", 2, FOUR)
    with caplog.at_level(logging.WARNING, logger="appliance.gpu.allocator"):
        dropped = a.rebuild({"jupyter-ann": ["GPU-0", "GPU-1"], "jupyter-bob": ["GPU-1", "GPU-2"],
                             "jupyter-cat": ["GPU-0"]})
    assert a.holdings() == {"jupyter-ann": ("GPU-0", "GPU-1"), "jupyter-bob": ("GPU-2",)}
    assert dropped == [("jupyter-bob", "GPU-1"), ("jupyter-cat", "GPU-0")]
    assert "GPU-1 is claimed by both jupyter-ann and jupyter-bob" in caplog.text
    assert [g.uuid for g in a.free_gpus(FOUR)] == ["GPU-3"]


# --- concurrency -------------------------------------------------------------------

def _race(a: Allocator) -> tuple[dict[str, tuple[str, ...]], list[CapacityError]]:
    """20 threads ask for 1 GPU each at the same moment."""
    barrier = threading.Barrier(20)
    won: dict[str, tuple[str, ...]] = {}
    refused: list[CapacityError] = []
    lock = threading.Lock()

    def ask(i: int) -> None:
        barrier.wait()
        try:
            got = a.assign(f"jupyter-u{i}", 1, FOUR)
            with lock:
                won[f"jupyter-u{i}"] = got
        except CapacityError as e:
            with lock:
                refused.append(e)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return won, refused


def test_twenty_threads_four_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    # Widen the window between "which GPUs are free" and "record the holder", where an
    # unlocked allocator would hand one GPU to two owners.
    policy = allocator_module.choose_gpus

    def slow_policy(free: list[GPU], count: int) -> list[GPU]:
        time.sleep(0.002)
        return policy(free, count)

    monkeypatch.setattr(allocator_module, "choose_gpus", slow_policy)
    for _ in range(3):
        a = Allocator()
        won, refused = _race(a)
        assert len(won) == 4 and len(refused) == 16
        assert sorted(u for uuids in won.values() for u in uuids) == ["GPU-0", "GPU-1", "GPU-2", "GPU-3"]
        assert a.holdings() == won
        assert all(e.free == 0 for e in refused)


# --- property: random sequences ------------------------------------------------------

OWNERS = [f"jupyter-u{i}" for i in range(6)]
SIX = [gpu(i, free_gib=f) for i, f in enumerate([80, 10, 40, 40, 80, 5])]
UUIDS = [g.uuid for g in SIX]


class AllocatorMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.alloc = Allocator()
        self.model: dict[str, tuple[str, ...]] = {}

    @rule(owner=st.sampled_from(OWNERS), count=st.integers(0, 7))
    def assign(self, owner: str, count: int) -> None:
        held_before = self.model.get(owner)
        free = len(SIX) - sum(len(v) for v in self.model.values())
        try:
            got = self.alloc.assign(owner, count, SIX)
        except ValueError:
            assert held_before is not None and len(held_before) != count
            return
        except CapacityError as e:
            assert held_before is None and count > free and e.free == free
            return
        if held_before is not None:
            assert got == held_before
        else:
            assert len(got) == count
            if count:
                self.model[owner] = got

    @rule(owner=st.sampled_from(OWNERS))
    def release(self, owner: str) -> None:
        released = self.alloc.release(owner)
        assert released == self.model.pop(owner, ())
        assert all(self.alloc.holder_of(u) is None for u in released)

    @rule(claims=st.dictionaries(st.sampled_from(OWNERS), st.lists(st.sampled_from(UUIDS), max_size=4),
                                 max_size=5))
    def rebuild(self, claims: dict[str, list[str]]) -> None:
        dropped = self.alloc.rebuild(claims)
        self.model = self.alloc.holdings()
        claimed = {(o, u) for o, us in claims.items() for u in us}
        kept = {(o, u) for o, us in self.model.items() for u in us}
        assert kept | set(dropped) == claimed  # nothing invented, nothing silently lost
        assert not kept & set(dropped)

    @precondition(lambda self: self.model)
    @rule()
    def release_everything(self) -> None:
        for owner in list(self.model):
            self.alloc.release(owner)
        self.model.clear()
        assert self.alloc.free_gpus(SIX) == SIX

    @invariant()
    def no_gpu_held_twice_and_no_leak(self) -> None:
        holdings = self.alloc.holdings()
        assert holdings == self.model
        held = [u for us in holdings.values() for u in us]
        assert len(held) == len(set(held))
        assert all(us for us in holdings.values())  # no empty entries
        free = {g.uuid for g in self.alloc.free_gpus(SIX)}
        assert free.isdisjoint(held) and free | set(held) == set(UUIDS)
        for owner, us in holdings.items():
            assert all(self.alloc.holder_of(u) == owner for u in us)


AllocatorMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestAllocatorMachine = AllocatorMachine.TestCase
