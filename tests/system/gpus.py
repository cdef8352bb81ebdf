"""The fake GPUs of the system tests: the fake NVML of tests/fake_nvml with four GPUs
and their device nodes in the container (TESTING.md), and what the tests ask about
them (the daemon's report, who holds which GPU, a spawn, what a server can open).
Used by test_4_gpu and the modules after it.
"""

from __future__ import annotations

import html
import json
import sys
import time
from pathlib import Path

from browser import Browser, login

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fake_nvml"))
from build import build  # noqa: E402

# NVML index -> minor number differ on purpose: the cgroup rule must use the minor.
GPUS = [(0, 2), (1, 0), (2, 3), (3, 1)]
UUID = "GPU-00000000-0000-0000-0000-00000000000{}"
MEM_USED = {0: 40, 1: 10, 2: 0, 3: 20}  # GiB; the policy picks the most free memory first
PASSWORD = "gpu-pass-1"


def fake_config(lost: int | None = None, procs: dict[int, dict[int, int]] | None = None) -> str:
    """The four GPUs; `procs`: NVML index -> {pid: bytes} of its compute processes."""
    lines = ["driver 550.54.14"]
    for index, minor in GPUS:
        on = (procs or {}).get(index)
        lines.append(f"gpu index={index} minor={minor} uuid={UUID.format(index)} name=NVIDIA_A100-SXM4-80GB "
                     f"mem_total={80 * 2**30} mem_used={MEM_USED[index] * 2**30} util_gpu={10 * index} "
                     f"pci=00000000:0{index + 1}:00.0 lost={int(index == lost)}"
                     + (" procs=" + ",".join(f"{p}:{b}" for p, b in on.items()) if on else ""))
    return "\n".join(lines) + "\n"


def install_fake_gpus(app, tmp_path_factory, nvml: str) -> None:
    """The fake NVML with this configuration, and the device nodes; again, harmlessly,
    if another module did it. The daemon reads the configuration on every call."""
    if app.sh("test -e /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1", check=False).returncode != 0:
        app.ct.copy_in(build(tmp_path_factory.mktemp("fake-nvml")), "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1")
    app.ct.write("/etc/fake-nvml.conf", nvml)
    nodes = [(f"/dev/nvidia{m}", 195, m) for _, m in GPUS] + [
        ("/dev/nvidiactl", 195, 255), ("/dev/nvidia-uvm", 509, 0), ("/dev/nvidia-uvm-tools", 509, 1)]
    app.sh("".join(f"[ -e {p} ] || mknod -m 666 {p} c {a} {b}; " for p, a, b in nodes))
    app.ct.write("/etc/systemd/system/jupyterhub-appliance.service.d/fake-nvml.conf",
                 "[Service]\nEnvironment=FAKE_NVML_CONFIG=/etc/fake-nvml.conf\n")


def report(app) -> dict:
    reply = json.loads(app.daemon_request('{"op": "gpus"}').stdout)
    assert reply["ok"], reply
    return reply


def holders(app) -> dict[str, str | None]:
    return {g["uuid"]: g["holder"] for g in report(app)["gpus"]}


def spawn(app, name: str, fields: dict[str, str] | None) -> tuple[Browser, bool, list[str]]:
    """Log in and submit the spawn form; with fields None there is no form (nothing
    to choose) and logging in starts the server."""
    b = login(app, name, PASSWORD)
    if fields is not None:
        r = b.spawn_with_form(name, fields)
        if r.status_code == 503:
            # A refusal within JupyterHub's first second of the spawn comes back as
            # the form's answer instead of on the pending page: same words.
            return b, False, [html.unescape(r.text)]
        assert r.status_code == 302, (r.status_code, r.text[:500])
    ready, messages = b.spawn_outcome(name)
    return b, ready, messages


def opens(b: Browser, name: str, paths: list[str]) -> dict:
    """From inside the user's server: what opening each path gives ("OPEN" or the
    errno's name), and the server's CUDA settings."""
    b.wait_for_server(name)
    kernel = b.start_kernel(name)
    out = b.execute(name, kernel, (
        "import errno, os, json\n"
        "res = {}\n"
        f"for p in {paths!r}:\n"
        "    try:\n"
        "        os.close(os.open(p, os.O_RDONLY if 'caps' in p else os.O_RDWR)); res[p] = 'OPEN'\n"
        "    except OSError as e:\n"
        "        res[p] = errno.errorcode[e.errno]\n"
        "print(json.dumps({'dev': res, 'cuda': os.environ.get('CUDA_VISIBLE_DEVICES'),"
        " 'order': os.environ.get('CUDA_DEVICE_ORDER')}))"))
    return json.loads(out)


def device_access(b: Browser, name: str) -> dict:
    """What opening each GPU node gives, by minor number."""
    data = opens(b, name, [f"/dev/nvidia{minor}" for _, minor in GPUS])
    data["dev"] = {int(p.removeprefix("/dev/nvidia")): v for p, v in data["dev"].items()}
    return data


def wait_until(what: str, check, timeout: float = 90):
    """check()'s first true answer, asked every 0.3 s; AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not in {timeout} s")
        time.sleep(0.3)
    return result


def api_status(b: Browser, query: str = ""):
    """The GPU dashboard's API; after a reload its service takes a moment to start (503)."""
    deadline = time.monotonic() + 30
    while (r := b.get("/services/gpus/api/status" + query)).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.5)
    return r
