"""GPU inventory read through real pynvml against the fake NVML library."""
from __future__ import annotations

import ctypes.util
import json
import shutil

import pynvml
import pytest

from appliance.gpu.inventory import GPU, Inventory, read_inventory, read_processes

from .fake_nvml_fixture import FakeGPU, FakeMig, FakeNvml, fake_nvml, fake_nvml_library, run_in_subprocess  # noqa: F401

GiB = 2**30

FOUR = [
    FakeGPU(0, minor=3, uuid="GPU-aaaaaaaa-0000-0000-0000-000000000000", name="NVIDIA A100-SXM4-80GB",
            mem_total=80 * GiB, mem_used=10 * GiB, util_gpu=12, temp=61, power=245500, pci="00000000:07:00.0"),
    FakeGPU(1, minor=1, uuid="GPU-bbbbbbbb-0000-0000-0000-000000000000", name="NVIDIA A100-SXM4-80GB",
            mem_total=80 * GiB, mem_used=0, mem_reserved=GiB // 2, util_gpu=0, pci="00000000:0F:00.0"),
    FakeGPU(2, minor=0, uuid="GPU-cccccccc-0000-0000-0000-000000000000", name="NVIDIA L4",
            mem_total=24 * GiB, mem_used=GiB, util_gpu=99, pci="00000000:47:00.0", mig="na"),
    FakeGPU(3, minor=2, uuid="GPU-dddddddd-0000-0000-0000-000000000000", name="NVIDIA H100 80GB HBM3",
            mem_total=80 * GiB, mem_used=0, util_gpu=0, pci="00000000:4E:00.0"),
]

READ_IN_SUBPROCESS = "import json; from appliance.gpu.inventory import read_inventory; " \
                     "print(json.dumps(read_inventory().to_dict()))"


def test_four_gpus_with_minor_numbers_different_from_indices(fake_nvml: FakeNvml) -> None:
    fake_nvml.write(FOUR, driver="550.54.14")
    inv = read_inventory()
    assert inv.available and inv.reason is None and inv.unusable == ()
    assert inv.driver_version == "550.54.14"
    assert [(g.index, g.minor) for g in inv.gpus] == [(0, 3), (1, 1), (2, 0), (3, 2)]
    assert inv.gpus[0] == GPU(index=0, minor=3, uuid="GPU-aaaaaaaa-0000-0000-0000-000000000000",
                              name="NVIDIA A100-SXM4-80GB", memory_total=80 * GiB,
                              memory_free=70 * GiB, memory_used=10 * GiB,
                              pci_bus_id="00000000:07:00.0", utilization=12, mig_enabled=False,
                              temperature=61, power_watts=245.5)
    # memory v2: driver-reserved memory is neither used nor free
    assert (inv.gpus[1].memory_used, inv.gpus[1].memory_free) == (0, 80 * GiB - GiB // 2)
    assert inv.gpus[2].name == "NVIDIA L4" and inv.gpus[2].utilization == 99
    assert inv.gpus[2].device_nodes == ("/dev/nvidia0",)
    assert inv.by_uuid("GPU-dddddddd-0000-0000-0000-000000000000") == inv.gpus[3]
    # Every nvmlInit was matched by an nvmlShutdown.
    assert fake_nvml.init_count() == 0


def test_a_board_without_temperature_or_power_readings_stays_allocatable(fake_nvml: FakeNvml) -> None:
    fake_nvml.write([FakeGPU(0, fail=["temp:3", "power"])])  # 3: NVML_ERROR_NOT_SUPPORTED
    inv = read_inventory()
    assert inv.unusable == () and len(inv.gpus) == 1
    assert (inv.gpus[0].temperature, inv.gpus[0].power_watts) == (None, None)


def test_pynvml_loaded_the_fake_through_its_own_loader(fake_nvml: FakeNvml) -> None:
    fake_nvml.write(FOUR)
    assert pynvml.nvmlLib is None
    assert read_inventory().available
    # pynvml's CDLL("libnvidia-ml.so.1") resolved to the fake (only it has this symbol).
    assert pynvml.nvmlLib._name == "libnvidia-ml.so.1"
    assert hasattr(pynvml.nvmlLib, "fake_nvml_init_count")


def test_to_dict_is_json(fake_nvml: FakeNvml) -> None:
    fake_nvml.write(FOUR[:1] + [FakeGPU(1, lost=True)])
    data = json.loads(json.dumps(read_inventory().to_dict()))
    assert data["available"] is True and data["driver_version"] == "550.54.14"
    assert data["gpus"][0]["minor"] == 3 and data["gpus"][0]["uuid"].startswith("GPU-aaaa")
    assert data["unusable"] == [{"index": 1, "reason": "GPU is lost (reading handle)"}]


def test_lost_gpu_is_unusable_and_the_others_are_listed(fake_nvml: FakeNvml) -> None:
    gpus = [FakeGPU(g.index, minor=g.minor, uuid=g.uuid, lost=(g.index == 2)) for g in FOUR]
    fake_nvml.write(gpus)
    inv = read_inventory()
    assert inv.available
    assert [g.index for g in inv.gpus] == [0, 1, 3]
    assert [i for i, _ in inv.unusable] == [2]
    assert "lost" in inv.unusable[0][1]
    assert fake_nvml.init_count() == 0


@pytest.mark.parametrize("query, words", [("minor", "minor number"), ("mem_v2", "memory"),
                                          ("pci", "PCI info"), ("util", "utilization"), ("mig", "MIG mode"),
                                          ("uuid", "UUID"), ("name", "name"), ("handle", "handle")])
def test_gpu_failing_one_query_is_unusable(fake_nvml: FakeNvml, query: str, words: str) -> None:
    fake_nvml.write([FakeGPU(0), FakeGPU(1, fail=[query])])
    inv = read_inventory()
    assert [g.index for g in inv.gpus] == [0]
    assert inv.unusable == ((1, f"Unknown Error (reading {words})"),)


def test_memory_falls_back_to_v1_on_old_drivers(fake_nvml: FakeNvml) -> None:
    # 13 = NVML_ERROR_FUNCTION_NOT_FOUND: a driver before 510 has no _v2.
    fake_nvml.write([FakeGPU(0, mem_total=16 * GiB, mem_used=GiB, mem_reserved=GiB, fail=["mem_v2:13"])])
    gpu = read_inventory().gpus[0]
    assert (gpu.memory_used, gpu.memory_free) == (2 * GiB, 14 * GiB)  # v1 counts reserved as used


def test_utilization_change_is_seen_by_the_next_read(fake_nvml: FakeNvml) -> None:
    fake_nvml.write([FakeGPU(0, util_gpu=5, mem_used=GiB)])
    first = read_inventory().gpus[0]
    fake_nvml.write([FakeGPU(0, util_gpu=87, mem_used=3 * GiB)])
    second = read_inventory().gpus[0]
    assert (first.utilization, first.memory_used) == (5, GiB)
    assert (second.utilization, second.memory_used) == (87, 3 * GiB)


def mig_host(tmp_path, minors: dict[str, int], nodes: list[int]) -> tuple:
    """/proc/driver/nvidia-caps/mig-minors and /dev/nvidia-caps as the driver makes them."""
    (tmp_path / "mig-minors").write_text("".join(f"{k} {v}\n" for k, v in minors.items()))
    caps = tmp_path / "nvidia-caps"
    caps.mkdir()
    for n in nodes:
        (caps / f"nvidia-cap{n}").touch()
    return tmp_path / "mig-minors", caps


# GPU minor 4 in MIG mode: GPU instances 1 and 2, one compute instance each.
MINORS = {"config": 1, "monitor": 2, "gpu4/gi1/access": 39, "gpu4/gi1/ci0/access": 40,
          "gpu4/gi2/access": 48, "gpu4/gi2/ci0/access": 49}


def test_a_gpu_in_mig_mode_is_allocatable_only_as_its_mig_devices(fake_nvml: FakeNvml, tmp_path) -> None:
    fake_nvml.write([FakeGPU(0, minor=4, mig="1", name="NVIDIA H100 80GB HBM3"), FakeGPU(1, mig="0"),
                     FakeGPU(2, mig="na")],
                    migs=[FakeMig(0, gi=1, profile="1g.10gb", mem_used=GiB),
                          FakeMig(0, gi=2, profile="3g.40gb", mem_total=40 * GiB)])
    inv = read_inventory(*mig_host(tmp_path, MINORS, [39, 40, 48, 49]))
    assert inv.unusable == ()
    parent = "GPU-00000000-1111-2222-3333-444455556666"
    assert [(g.uuid, g.parent, g.profile, g.caps) for g in inv.gpus] == [
        ("MIG-00000001-0000-0000-0000-000000000000", parent, "1g.10gb", (39, 40)),
        ("MIG-00000002-0000-0000-0000-000000000000", parent, "3g.40gb", (48, 49)),
        ("GPU-00000001-1111-2222-3333-444455556666", None, None, ()),
        ("GPU-00000002-1111-2222-3333-444455556666", None, None, ())]
    small, big = inv.gpus[:2]
    assert small.name == "NVIDIA H100 80GB HBM3 MIG 1g.10gb" and small.mig_enabled and small.minor == 4
    assert (small.memory_total, small.memory_used, big.memory_total) == (10 * GiB, GiB, 40 * GiB)
    assert small.device_nodes == ("/dev/nvidia4", "/dev/nvidia-caps/nvidia-cap39", "/dev/nvidia-caps/nvidia-cap40")
    # The driver reports no utilization for MIG devices: unknown, not "idle".
    assert [g.utilization for g in inv.gpus] == [None, None, 0, 0]
    assert fake_nvml.init_count() == 0


def test_a_mig_device_that_cannot_be_confined_is_left_out_and_said_why(fake_nvml: FakeNvml, tmp_path) -> None:
    fake_nvml.write([FakeGPU(0, minor=4, mig="1"), FakeGPU(1, mig="1")],
                    migs=[FakeMig(0, gi=1), FakeMig(0, gi=2), FakeMig(0, gi=3)])
    minors = {**MINORS, "gpu4/gi3/access": 57}  # gi3's compute instance is not listed
    inv = read_inventory(*mig_host(tmp_path, minors, [39, 40, 57]))  # gi2's nodes were never made
    assert [g.uuid for g in inv.gpus] == ["MIG-00000001-0000-0000-0000-000000000000"]
    assert inv.unusable == (
        (0, "MIG device MIG-00000002-0000-0000-0000-000000000000: no /dev/nvidia-caps/nvidia-cap48; "
            "create it with nvidia-modprobe -f /proc/driver/nvidia/capabilities/gpu4/gi2/access"
            .replace("/dev/nvidia-caps", str(tmp_path / "nvidia-caps"))),
        (0, "MIG device MIG-00000003-0000-0000-0000-000000000000: gpu4/gi3/ci0/access is not in "
            "/proc/driver/nvidia-caps/mig-minors, so it cannot be confined to its own instance"),
        (1, "in MIG mode with no MIG devices: create them with nvidia-smi mig -cgi PROFILES -C, "
            "or turn MIG mode off (nvidia-smi -mig 0)"))


def test_two_mig_devices_of_one_gpu_are_told_apart_by_their_caps(fake_nvml: FakeNvml, tmp_path) -> None:
    from appliance.gpu.devices import device_allow, held
    fake_nvml.write([FakeGPU(0, minor=4, mig="1"), FakeGPU(1, minor=0)],
                    migs=[FakeMig(0, gi=1), FakeMig(0, gi=2)])
    a, b, whole = read_inventory(*mig_host(tmp_path, MINORS, [39, 40, 48, 49])).gpus
    assert held(device_allow([a]), [a, b, whole]) == [a.uuid]
    assert held(device_allow([b]), [a, b, whole]) == [b.uuid]
    both = device_allow([a, b])
    assert [p for p, _ in both].count("/dev/nvidia4") == 1 and held(both, [a, b, whole]) == [a.uuid, b.uuid]
    # The parent's node alone (what a whole-GPU grant of it was) gives no instance.
    assert held([("/dev/nvidia4", "rw")], [a, b, whole]) == []


def test_no_config_means_no_driver(fake_nvml: FakeNvml) -> None:
    inv = read_inventory()  # the config file was never written
    assert inv == Inventory(available=False,
                            reason="NVML not available (nvmlInit failed: Driver Not Loaded): running CPU-only")
    assert inv.to_dict()["gpus"] == []


def test_init_error_gives_cpu_only(fake_nvml: FakeNvml) -> None:
    fake_nvml.write(FOUR, init_error=pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH)
    inv = read_inventory()
    assert not inv.available and inv.gpus == () and inv.driver_version is None
    assert "version mismatch" in inv.reason and inv.reason.endswith("running CPU-only")
    # after the driver is fixed, the next read works (pynvml retries init)
    fake_nvml.write(FOUR)
    assert len(read_inventory().gpus) == 4


def test_reads_do_not_leak_init_when_called_from_threads(fake_nvml: FakeNvml) -> None:
    from concurrent.futures import ThreadPoolExecutor
    fake_nvml.write(FOUR)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: read_inventory(), range(40)))
    assert all(len(r.gpus) == 4 for r in results)
    assert fake_nvml.init_count() == 0


def test_fake_reports_processes_and_handles_by_uuid(fake_nvml: FakeNvml) -> None:
    # The reclaimer reads processes with pynvml directly: check the fake answers.
    fake_nvml.write([FakeGPU(0), FakeGPU(1, procs=[(4242, 3 * GiB), (4343, GiB)])])
    pynvml.nvmlInit()
    try:
        idle = pynvml.nvmlDeviceGetHandleByUUID(FakeGPU(0).uuid)
        busy = pynvml.nvmlDeviceGetHandleByUUID(FakeGPU(1).uuid)
        assert pynvml.nvmlDeviceGetComputeRunningProcesses(idle) == []
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(busy)
        assert [(p.pid, p.usedGpuMemory) for p in procs] == [(4242, 3 * GiB), (4343, GiB)]
        with pytest.raises(pynvml.NVMLError_NotFound):
            pynvml.nvmlDeviceGetHandleByUUID("GPU-nope")
    finally:
        pynvml.nvmlShutdown()


def test_library_on_ld_library_path_in_a_fresh_process(fake_nvml: FakeNvml) -> None:
    # The way system tests and the daemon find it: a plain dlopen search.
    fake_nvml.write(FOUR)
    data = run_in_subprocess(READ_IN_SUBPROCESS, {
        "LD_LIBRARY_PATH": str(fake_nvml.library.parent), "FAKE_NVML_CONFIG": str(fake_nvml.config)})
    assert data["available"] is True
    assert [(g["index"], g["minor"]) for g in data["gpus"]] == [(0, 3), (1, 1), (2, 0), (3, 2)]


def test_no_library_gives_cpu_only(tmp_path) -> None:
    if ctypes.util.find_library("nvidia-ml") or shutil.which("nvidia-smi"):
        pytest.skip("a real NVIDIA driver is installed on this machine")
    data = run_in_subprocess(READ_IN_SUBPROCESS, {"FAKE_NVML_CONFIG": str(tmp_path / "unused")})
    assert data == {"available": False, "driver_version": None, "gpus": [], "unusable": [],
                    "reason": "NVML not available (libnvidia-ml.so.1 not found): running CPU-only"}


def test_malformed_fake_config_fails_loudly(fake_nvml: FakeNvml, capfd: pytest.CaptureFixture[str]) -> None:
    # Guards the fixture itself: a typo in a test's config must not look like a GPU.
    fake_nvml.config.write_text("driver 550.54.14\ngpu index=0 mem_totl=5\n")
    inv = read_inventory()
    assert not inv.available and "Unknown Error" in inv.reason
    assert "fake_nvml.conf:2: bad gpu key or value: mem_totl" in capfd.readouterr().err


def test_each_gpus_compute_processes_with_their_memory(fake_nvml: FakeNvml) -> None:
    fake_nvml.write([FakeGPU(0, procs=[(4242, 3 * GiB), (4343, GiB)]), FakeGPU(1), FakeGPU(2, lost=True)])
    uuids = [f"GPU-{i:08x}-1111-2222-3333-444455556666" for i in range(3)]
    assert read_processes(uuids + ["GPU-gone"]) == {uuids[0]: [(4242, 3 * GiB), (4343, GiB)], uuids[1]: []}
    assert read_processes([]) == {} and fake_nvml.init_count() == 0


def test_a_mig_devices_utilization_is_read_where_the_driver_reports_it_and_the_reclaim_uses_it(
        fake_nvml: FakeNvml, tmp_path) -> None:
    import asyncio

    from appliance.daemon.gpus import GpuManager
    from appliance.gpu.devices import device_allow

    from .conftest import FakeManager
    fake_nvml.write([FakeGPU(0, minor=4, mig="1")],
                    migs=[FakeMig(0, gi=1, util_gpu=0), FakeMig(0, gi=2)])  # gi2: not reported, as usual
    minors, caps = mig_host(tmp_path, MINORS, [39, 40, 48, 49])
    reported, silent = read_inventory(minors, caps).gpus
    assert (reported.utilization, silent.utilization) == (0, None)
    sd = FakeManager()
    sd.add("jupyter-ann.service", device_allow([reported]))
    sd.add("jupyter-bob.service", device_allow([silent]))
    m = GpuManager(sd, inventory=lambda: read_inventory(minors, caps), clock=lambda: 100.0)
    asyncio.run(m.sample(threshold=5))
    assert set(m.idle_since) == {"jupyter-ann.service"}  # bob's device reports nothing: never idle
