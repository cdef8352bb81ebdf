"""GPU allocation: the policy, capacity errors and quotas, as pure functions."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.gpu.allocator import CapacityError, Kind, QuotaError, assign, choose_gpus, per_gpu, quota_for
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
    held: dict[str, tuple[str, ...]] = {}
    held["jupyter-ann"] = assign(held, 1, gpus)
    held["jupyter-bob"] = assign(held, 2, gpus)
    assert held == {"jupyter-ann": ("GPU-1",), "jupyter-bob": ("GPU-2", "GPU-3")}
    assert assign(held, 1, gpus) == ("GPU-0",)


def test_a_shared_gpu_takes_as_many_servers_as_its_seats_and_a_whole_gpu_goes_first() -> None:
    gpus = [gpu(0, 80), gpu(1, 10)]
    seats = per_gpu(gpus, {"0": 4})  # by NVML index; a UUID works the same
    assert seats == {"GPU-0": 4} and per_gpu(gpus, {"GPU-1": 2}) == {"GPU-1": 2}
    held: dict[str, tuple[str, ...]] = {}
    held["jupyter-u0"] = assign(held, 1, gpus, seats=seats)
    assert held["jupyter-u0"] == ("GPU-1",)  # a GPU of one's own first, though it has less free memory
    for i in range(1, 5):
        held[f"jupyter-u{i}"] = assign(held, 1, gpus, seats=seats)
    assert [held[f"jupyter-u{i}"] for i in range(1, 5)] == [("GPU-0",)] * 4
    with pytest.raises(CapacityError, match="All GPUs are busy"):
        assign(held, 1, gpus, seats=seats)  # the fifth on GPU-0 waits
    # Two GPUs for one server are two different GPUs, never two seats of one.
    del held["jupyter-u0"], held["jupyter-u1"]
    assert sorted(assign(held, 2, gpus, seats=seats)) == ["GPU-0", "GPU-1"]


def test_a_share_profile_gets_only_a_seat_of_its_size_and_a_mig_gpu_is_never_shared() -> None:
    gpus = [gpu(0), gpu(1), gpu(2)]
    seats = per_gpu(gpus, {"1": 4, "2": 2})
    assert assign({}, 1, gpus, Kind(share=4), seats) == ("GPU-1",)
    assert assign({}, 1, gpus, Kind(share=2), seats) == ("GPU-2",)
    with pytest.raises(CapacityError, match="This server has no usable seat on a GPU shared 8 ways: you asked for "
                                            "1 seat on a GPU shared 8 ways"):
        assign({}, 1, gpus, Kind(share=8), seats)
    from dataclasses import replace
    mig = replace(gpu(3), uuid="MIG-3", parent="GPU-3", profile="1g.10gb")
    assert per_gpu([mig], {"3": 4, "MIG-3": 4}) == {}


def test_count_zero_takes_nothing() -> None:
    assert assign({"u1": ("GPU-0", "GPU-1", "GPU-2", "GPU-3")}, 0, FOUR) == ()


# --- capacity errors ----------------------------------------------------------------

def test_capacity_error_when_all_busy() -> None:
    with pytest.raises(CapacityError) as e:
        assign({"u1": ("GPU-0", "GPU-1", "GPU-2", "GPU-3")}, 2, FOUR)
    assert (e.value.requested, e.value.free) == (2, 0)
    assert str(e.value) == ("All GPUs are busy: you asked for 2 GPUs, none is free. "
                            "Start a CPU-only server or try again later.")


def test_capacity_error_when_not_enough_free() -> None:
    with pytest.raises(CapacityError) as e:
        assign({"u1": ("GPU-0", "GPU-1", "GPU-2")}, 2, FOUR)
    assert (e.value.requested, e.value.free) == (2, 1)
    assert str(e.value) == ("Not enough free GPUs: you asked for 2 GPUs, 1 is free. "
                            "Ask for fewer, start a CPU-only server or try again later.")


def test_capacity_error_on_a_host_without_gpus_or_too_few() -> None:
    with pytest.raises(CapacityError, match="^This server has no usable GPU: you asked for 1 GPU. "
                                            "Start a CPU-only server.$"):
        assign({}, 1, [])
    with pytest.raises(CapacityError, match="this server has only 4 GPUs"):
        assign({}, 5, FOUR)


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


def test_quota_error_wording() -> None:
    e = QuotaError(3, 2)
    assert (e.requested, e.quota) == (3, 2)
    assert str(e) == "You asked for 3 GPUs; your quota is 2 GPUs."
    assert str(QuotaError(1, 0)) == "You asked for 1 GPU; your quota is 0 GPUs."


# --- rebuild -----------------------------------------------------------------------

# --- property: any holdings, any request ---------------------------------------------

SIX = [gpu(i, free_gib=f) for i, f in enumerate([80, 10, 40, 40, 80, 5])]
UUIDS = [g.uuid for g in SIX]


@settings(max_examples=300, deadline=None)
@given(held=st.dictionaries(st.sampled_from([f"jupyter-u{i}" for i in range(6)]),
                            st.lists(st.sampled_from(UUIDS), max_size=3).map(tuple), max_size=5),
       count=st.integers(0, 7))
def test_never_a_gpu_someone_holds_and_never_more_than_asked(held, count) -> None:
    taken = {u for us in held.values() for u in us}
    free = [u for u in UUIDS if u not in taken]
    try:
        got = assign(held, count, SIX)
    except CapacityError as e:
        assert count > len(free) and e.free == len(free)
        return
    assert len(got) == len(set(got)) == count and not set(got) & taken
    # The policy: nothing left free has more free memory than what was chosen.
    by_uuid = {g.uuid: g for g in SIX}
    if got:
        worst = min(by_uuid[u].memory_free for u in got)
        assert all(by_uuid[u].memory_free <= worst for u in free if u not in got)
