"""What only a real NVIDIA GPU can prove, checked on a host that has one and runs
the installed appliance (scripts/real-gpu-check). The tests use a fake NVML and
fake device nodes; they cannot show that the driver gives a server exactly its
GPU, MIG device or seat and nothing else, nor what happens to a CUDA allocation
past a seat's budget.

It starts a server for an existing appliance user, opens a kernel in it, and from
that kernel: lists what CUDA sees (the driver API through ctypes, no torch or cupy
needed), tries to open the other GPUs' and MIG devices' files, and allocates GPU
memory 1 GiB at a time past the server's budget (a seat's share, else its device's
memory), holding it while the daemon's share check runs. It prints what happened
and stops the server. It reads; it never changes a GPU's settings (no MIG mode, no
compute mode, no nvidia-smi write).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import subprocess
import sys
import time
import urllib.error
import urllib.request

KERNEL_CODE = r'''
import ctypes, errno, json, os
def check():
    out = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
    opens = {}
    for path in OTHER_FILES:
        try:
            os.close(os.open(path, os.O_RDONLY)); opens[path] = "OPEN"
        except OSError as e:
            opens[path] = errno.errorcode.get(e.errno, str(e.errno))
    out["other_files"] = opens
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        out["cuda"] = f"libcuda.so.1 not loadable: {e}"
        return out, []
    def ok(rc, what):
        if rc != 0:
            raise RuntimeError(f"{what} returned CUDA error {rc}")
    ok(cuda.cuInit(0), "cuInit")
    n = ctypes.c_int(); ok(cuda.cuDeviceGetCount(ctypes.byref(n)), "cuDeviceGetCount")
    names = []
    for i in range(n.value):
        dev = ctypes.c_int(); ok(cuda.cuDeviceGet(ctypes.byref(dev), i), "cuDeviceGet")
        buf = ctypes.create_string_buffer(256); cuda.cuDeviceGetName(buf, 256, dev); names.append(buf.value.decode())
    out["devices"] = names
    held = []
    if names:
        dev = ctypes.c_int(); cuda.cuDeviceGet(ctypes.byref(dev), 0)
        ctx = ctypes.c_void_p(); ok(cuda.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev), "cuCtxCreate")
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        ok(cuda.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)), "cuMemGetInfo")
        out["memory_total"], out["memory_free"] = total.value, free.value
        err = None
        while len(held) * 2**30 < TARGET:
            p = ctypes.c_void_p()
            rc = cuda.cuMemAlloc_v2(ctypes.byref(p), ctypes.c_size_t(2**30))
            if rc != 0:
                err = rc; break
            held.append(p)
        out["allocated_gib"], out["allocation_error"] = len(held), err
    return out, held
result, held = check()  # `held` stays in the kernel: the daemon sees its memory
print(json.dumps(result))
'''


APPLCTL = "/usr/bin/applctl"  # by path: this runs as root
JOURNALCTL = "/usr/bin/journalctl"


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def applctl_json(*args: str) -> dict:
    return json.loads(sh(APPLCTL, *args, "--json"))


def call(method: str, url: str, token: str, body: dict | None = None) -> dict | None:
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


# Run as the server's user (run_in_kernel): the code on stdin, what it printed and
# its error out, as JSON.
CLIENT = r'''
import json, queue, sys, time
from jupyter_client import BlockingKernelClient
kc = BlockingKernelClient(connection_file=sys.argv[1])
kc.load_connection_file()
kc.start_channels()
# A kernel just started may not hear our IOPub subscription before it runs the code:
# it would then publish the output and the idle status to no one, and the client
# would wait for them until its timeout. Ask for kernel_info until its status comes
# back on IOPub: from then on, nothing published is lost.
deadline = time.monotonic() + 120
heard = False
while not heard and time.monotonic() < deadline:
    asked = kc.kernel_info()
    try:
        while not heard:
            heard = kc.get_iopub_msg(timeout=1)["parent_header"].get("msg_id") == asked
    except queue.Empty:
        pass
if not heard:
    sys.exit("the kernel's IOPub channel did not answer in 120 s")
printed, error = [], None
def on_output(msg):
    global error
    if msg["msg_type"] == "stream":
        printed.append(msg["content"]["text"])
    elif msg["msg_type"] == "error":
        error = f"{msg['content']['ename']}: {msg['content']['evalue']}"
try:
    kc.execute_interactive(sys.stdin.read(), timeout=float(sys.argv[2]), output_hook=on_output)
finally:
    kc.stop_channels()
print(json.dumps(["".join(printed), error]))
'''


def run_in_kernel(user: str, kernel: str, code: str, timeout: float) -> tuple[str, str | None]:
    """(what the code printed, the kernel's error if any), over the kernel's own
    sockets as JupyterLab's connection does. Done as the server's user, not root:
    the connection file and the sockets are in their runtime directory, where they
    could put links."""
    pw = pwd.getpwnam(user)
    proc = subprocess.run([sys.executable, "-I", "-c", CLIENT, f"/run/jupyter-{user}/kernel-{kernel}.json",
                           str(timeout)], input=code, capture_output=True, text=True, user=pw.pw_uid,
                          group=pw.pw_gid, extra_groups=[], cwd="/", timeout=timeout + 60)
    if proc.returncode != 0:
        sys.exit(f"real-gpu-check: could not run code in {user}'s kernel: {proc.stderr.strip()[-500:]}")
    printed, error = json.loads(proc.stdout)
    return printed, error


def main() -> int:
    ap = argparse.ArgumentParser(prog="real-gpu-check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--user", required=True, help="an existing appliance user (applctl adduser) whose server to start")
    ap.add_argument("--profile", help="a [profiles.NAME] to start (a MIG profile or a gpu_share one); else 1 GPU")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("real-gpu-check: run it as root (it reads the kernel's connection file)")
    report = applctl_json("gpus")
    if not report.get("available") or not report.get("gpus"):
        print(f"real-gpu-check: no usable NVIDIA GPU here ({report.get('reason') or 'none listed'}): "
              "this check is for a host with one")
        return 2
    print("Inventory (NVML, as the daemon reads it):")
    for g in report["gpus"]:
        kind = f"MIG {g['profile']} of {g['parent']}, caps {g['caps']}" if g.get("parent") else \
            f"shared, {g['seats']} seats of {g.get('seat_memory', 0) / 2**30:.1f} GiB" if g.get("seats", 1) > 1 \
            else "whole"
        print(f"  {g['uuid']}  {g['name']}  {g['memory_total'] / 2**30:.1f} GiB  {kind}")
    for u in report.get("unusable", []):
        print(f"  GPU {u['index']} not used: {u['reason']}")

    port = applctl_json("config", "get", "hub.port")["value"]
    base = f"http://127.0.0.1:{port}"
    token = sh(APPLCTL, "token", args.user).strip()
    user = args.user
    try:
        call("POST", f"{base}/hub/api/users/{user}/server", token, {"profile": args.profile} if args.profile
             else {"gpus": 1})
    except urllib.error.HTTPError as e:
        if e.code != 400:  # 400: it runs already
            sys.exit(f"real-gpu-check: the hub refused the server: {e.code} {e.read()[:300]!r}")
    deadline = time.monotonic() + 300
    while not (call("GET", f"{base}/hub/api/users/{user}", token) or {}).get("servers", {}).get("", {}).get("ready"):
        if time.monotonic() > deadline:
            sys.exit(f"real-gpu-check: {user}'s server was not ready in 300 s (applctl logs --user {user})")
        time.sleep(1)
    report = applctl_json("gpus")
    mine = [g for g in report["gpus"] if user in (g.get("holders") or [g.get("holder")])]
    print(f"\n{user}'s server holds: {', '.join(g['uuid'] for g in mine) or 'no GPU'}")
    if not mine:
        return 1
    g = mine[0]
    budget = g.get("seat_memory") or g["memory_total"]
    others = [n for o in report["gpus"] if o["uuid"] not in {m["uuid"] for m in mine}
              for n in ([f"/dev/nvidia{o['minor']}"] if not o.get("parent") else [])
              + [f"/dev/nvidia-caps/nvidia-cap{c}" for c in o.get("caps", [])]]
    held_files = {f"/dev/nvidia{m['minor']}" for m in mine} | {f"/dev/nvidia-caps/nvidia-cap{c}" for m in mine
                                                                for c in m.get("caps", [])}
    others = sorted(set(others) - held_files)

    kernel = call("POST", f"{base}/user/{user}/api/kernels", token, {"name": "python3"})["id"]
    code = KERNEL_CODE.replace("OTHER_FILES", repr(others)).replace("TARGET", str(budget + 2 * 2**30))
    printed, error = run_in_kernel(user, kernel, code, timeout=600)
    if error:
        print(f"the kernel's code failed: {error}")
    result = json.loads(printed.strip().splitlines()[-1]) if printed.strip() else {}
    print(f"\nFrom {user}'s kernel:")
    print(f"  CUDA_VISIBLE_DEVICES={result.get('CUDA_VISIBLE_DEVICES')}")
    print(f"  CUDA sees: {result.get('devices', result.get('cuda'))}")
    opened = [p for p, r in result.get("other_files", {}).items() if r != "EPERM"]
    print(f"  other GPUs' files: {len(result.get('other_files', {}))} tried, "
          + ("all refused (EPERM)" if not opened else f"NOT refused: {opened}"))
    if "allocated_gib" in result:
        print(f"  allocated {result['allocated_gib']} GiB of a budget of {budget / 2**30:.1f} GiB"
              + (f", then CUDA error {result['allocation_error']}" if result["allocation_error"] else ""))
    if g.get("seats", 1) > 1 and result.get("allocated_gib", 0) * 2**30 > budget:
        grace = applctl_json("config", "get", "gpu.share_grace")["value"]
        interval = applctl_json("config", "get", "gpu.sample_interval")["value"]
        print(f"  over the seat's budget: waiting up to {grace + 3 * interval} s for the daemon to stop the kernel")
        deadline = time.monotonic() + grace + 3 * interval
        state = "alive"
        while time.monotonic() < deadline:
            k = call("GET", f"{base}/user/{user}/api/kernels/{kernel}", token)
            if (k or {}).get("execution_state") in ("dead", "restarting", "starting"):
                state = k["execution_state"]
                break
            time.sleep(2)
        print(f"  the kernel: {state}; the daemon's log says:")
        print("    " + sh(JOURNALCTL, "-u", f"jupyter-{user}.service", "-n", "5", "--no-pager", "-o", "cat"
                          ).strip().replace("\n", "\n    "))
    call("DELETE", f"{base}/hub/api/users/{user}/server", token)
    print(f"\n{user}'s server stopped. Nothing of the GPU's settings was changed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
