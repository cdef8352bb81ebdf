"""Limits and reboots on a real kernel (memory and cpu cgroup controllers), which the
nspawn tier cannot prove: an OOM kill reported to its owner, a CPU quota held, the
cap on all user servers held, and a reboot that brings the appliance back clean.
The tests run in order on one VM, as a machine's day would."""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from browser import Browser
from vm import PASSWORD

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fake_nvml"))
from build import build  # noqa: E402

MiB = 1024**2


# Emulated (TCG), two JupyterLab starts side by side with the hub's own restart
# and its services took over 240 s once: a generous wait for what does happen.
SPAWN_WAIT = 600


def start(m, name: str) -> Browser:
    b = Browser(m.url)
    try:
        b.login_and_start(name, PASSWORD)
        b.wait_for_server(name, timeout=SPAWN_WAIT)
    except Exception as e:
        # What the server's unit says is the why (an OOM kill at start, a timeout...).
        unit = f"jupyter-{name}.service"
        said = m.sh(f"systemctl show {unit} -p ActiveState -p Result -p MemoryMax -p MemoryPeak -p NRestarts; "
                    f"journalctl -u {unit} -u jupyterhub -n 60 --no-pager", check=False).stdout
        raise AssertionError(f"{name}'s server did not start: {e}\n{said}") from e
    return b


def run_in_kernel(b: Browser, name: str, code: str, timeout: float = 60) -> str | Exception:
    """Run code in a new kernel of NAME's server; an exception if the kernel died."""
    try:
        return b.execute(name, b.start_kernel(name), code, timeout=timeout)
    except Exception as e:  # the kernel, or the whole server, was killed under it
        return e


def active(m, name: str) -> bool:
    return m.sh(f"systemctl is-active jupyter-{name}.service", check=False).stdout.strip() == "active"


def wait_until(what: str, check, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(1)
    return result


def test_the_vm_has_the_controllers_this_tier_is_for(machine):
    assert {"memory", "cpu"} <= set(machine.sh("cat /sys/fs/cgroup/cgroup.controllers").stdout.split())


@pytest.fixture(scope="module")
def limited(machine):
    """oomer (256 MiB) and spinner (half a core), configured with one reload and
    started side by side: emulated (TCG), a reload and a spawn each take minutes."""
    m = machine
    for name in ("oomer", "spinner"):
        m.add_user(name)
    m.configure('[limits]\nmem_limit_users = { oomer = "256M" }\ncpu_limit_users = { spinner = 0.5 }\n'
                '[culler]\nenabled = false\n')
    with ThreadPoolExecutor(2) as ex:
        browsers = dict(zip(("oomer", "spinner"), ex.map(lambda n: start(m, n), ("oomer", "spinner")), strict=False))
    return m, browsers


def test_a_busy_loop_gets_no_more_than_its_cpu_limit(limited):
    m, browsers = limited
    b = browsers["spinner"]
    kernel = b.start_kernel("spinner")
    m.sh("rm -f /home/spinner/spinning")
    # The loop says when it runs (a file in its home): emulated, opening the kernel's
    # websocket can take longer than any fixed wait, and the window must see the loop.
    with ThreadPoolExecutor(1) as pool:
        spin = pool.submit(b.execute, "spinner", kernel, "import time\nopen('spinning', 'w').close()\n"
                           "t = time.time()\nwhile time.time() - t < 25: pass\nprint('done')", timeout=120)
        wait_until("the busy loop's start", lambda: m.sh("test -e /home/spinner/spinning", check=False).returncode == 0)
        usage = lambda: int(m.unit_props("jupyter-spinner.service", "CPUUsageNSec")["CPUUsageNSec"])  # noqa: E731
        before, t0 = usage(), time.monotonic()
        time.sleep(10)
        used = (usage() - before) / 1e9 / (time.monotonic() - t0)
        assert spin.result().strip() == "done"  # the loop ran throughout, in the kernel
    assert 0.3 < used <= 0.6, f"the server used {used:.2f} of a core with cpu_limit 0.5"


def test_a_kernel_using_twice_its_memory_limit_is_oom_killed_and_its_owner_told(limited):
    m, browsers = limited
    b = browsers["oomer"]
    assert m.unit_props("jupyter-oomer.service", "MemoryMax")["MemoryMax"] == str(256 * MiB)
    run_in_kernel(b, "oomer", "x = b'1' * (512 * 1024 * 1024)\nprint(len(x))", timeout=60)
    wait_until("oomer's unit ended by the OOM killer", lambda: not active(m, "oomer"))
    assert m.unit_props("jupyter-oomer.service", "Result")["Result"] == "oom-kill"
    # The hub notices at its next poll of the server and tells its owner why.

    def home_with_reason():
        page = b.get("/hub/home").text
        return page if "ran out of memory" in page else None

    # Emulated (TCG) and with the spinner's busy loop beside it, the hub's next poll
    # (every 30 s) and the page can take minutes: 120 s was once not enough.
    home = wait_until("the home page's reason", home_with_reason, timeout=300)
    assert "because it ran out of memory (limit 256 MiB)." in home
    servers = m.sh("applctl servers").stdout
    assert any(line.startswith("oomer ") and " oom " in line for line in servers.splitlines()), servers


def test_the_cap_on_all_user_servers_holds_when_two_try_to_take_all_memory(machine):
    m = machine
    for name in ("hog1", "hog2"):
        m.add_user(name)
    m.sh("applctl stop --all >/dev/null")
    m.configure('[limits]\nmem_limit = "900M"\ntotal_memory = "1G"\n[culler]\nenabled = false\n')
    assert m.unit_props("jupyter-users.slice", "MemoryMax")["MemoryMax"] == str(1024 * MiB)
    browsers = {n: start(m, n) for n in ("hog1", "hog2")}
    grab = ("import time\nchunks = []\n"
            "for i in range(80):\n    chunks.append(b'1' * (10 * 1024 * 1024))\n    time.sleep(0.05)\n"
            "time.sleep(5)\nprint(len(chunks))")
    threads = [threading.Thread(target=run_in_kernel, args=(b, n, grab, 90)) for n, b in browsers.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cgroup = m.unit_props("jupyter-users.slice", "ControlGroup")["ControlGroup"]
    peak = int(m.sh(f"cat /sys/fs/cgroup{cgroup}/memory.peak").stdout)
    assert peak <= 1024 * MiB, f"jupyter-users.slice peaked at {peak / MiB:.0f} MiB over its 1024 MiB cap"
    killed = int(m.sh(f"grep '^oom_kill ' /sys/fs/cgroup{cgroup}/memory.events").stdout.split()[1])
    assert killed >= 1  # 1.6 GiB asked for in a 1 GiB slice: the kernel had to kill


GPU_UUID = "GPU-7b000000-0000-0000-0000-000000000000"


def install_fake_gpu(m, tmp_path: Path) -> None:
    """One fake GPU (tests/fake_nvml) that survives a reboot: the library and its
    configuration on disk, the device nodes made by systemd-tmpfiles at every boot."""
    m.vm.copy_in(build(tmp_path), "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1")
    m.vm.write("/etc/fake-nvml.conf", f"driver 550.54.14\ngpu index=0 minor=0 uuid={GPU_UUID} name=NVIDIA_L4 "
                                      f"mem_total={24 << 30} mem_used={1 << 30} util_gpu=50\n")
    m.vm.write("/etc/tmpfiles.d/fake-nvidia.conf", "".join(
        f"c {path} 0666 root root - {dev}\n" for path, dev in (
            ("/dev/nvidia0", "195:0"), ("/dev/nvidiactl", "195:255"), ("/dev/nvidia-uvm", "509:0"))))
    m.vm.write("/etc/systemd/system/jupyterhub-appliance.service.d/fake-nvml.conf",
               "[Service]\nEnvironment=FAKE_NVML_CONFIG=/etc/fake-nvml.conf\n")
    m.sh("systemd-tmpfiles --create /etc/tmpfiles.d/fake-nvidia.conf && systemctl daemon-reload && "
         "systemctl stop jupyterhub-appliance.service")


def gpu_holders(m) -> list:
    return [g["holder"] for g in json.loads(m.sh("applctl gpus --json").stdout)["gpus"]]


def test_a_reboot_brings_the_appliance_back_clean(machine, tmp_path):
    m = machine
    m.add_user("rebooter")
    install_fake_gpu(m, tmp_path)
    m.configure("[culler]\nenabled = false\n")
    b = Browser(m.url)
    b.login("rebooter", PASSWORD)
    b.spawn_with_form("rebooter", {"gpus": "1"})
    b.wait_for_server("rebooter", timeout=SPAWN_WAIT)
    assert gpu_holders(m) == ["rebooter"]
    assert "saved" in str(run_in_kernel(b, "rebooter", "open('notes.txt', 'w').write('kept'); print('saved')"))
    m.vm.reboot()
    m.wait_hub(timeout=180)
    for unit in ("jupyterhub", "jupyterhub-proxy", "jupyterhub-appliance.socket"):
        assert m.sh(f"systemctl is-active {unit}", check=False).stdout.strip() == "active", unit
    assert all(r["state"] == "stopped" for r in json.loads(m.sh("applctl servers --json").stdout))
    assert m.sh("systemctl list-units 'jupyter-*.service' --no-legend --state=active").stdout.strip() == ""
    assert gpu_holders(m) == [None], "a GPU is still held by a server the reboot ended"
    b = Browser(m.url)
    b.login("rebooter", PASSWORD)
    b.spawn_with_form("rebooter", {"gpus": "1"})
    b.wait_for_server("rebooter", timeout=SPAWN_WAIT)
    assert gpu_holders(m) == ["rebooter"]
    assert "kept" in str(run_in_kernel(b, "rebooter", "print(open('notes.txt').read())"))
