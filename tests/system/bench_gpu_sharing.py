"""The GPU-sharing benchmark behind scripts/bench-gpu-sharing: a compressed working
day on the fake NVML, run in the same container under each setup asked for:
"today" (no queue, no reclaim: a refused person tries again later), "queue" (whole
GPUs, the queue with reclaim), "seats" (the queue, each GPU shared 4 ways) and
"mig" (the queue, each GPU in MIG mode as seven 1g.10gb devices).

Every person has the same script in both runs (seeded): they arrive, then alternate
busy periods (their GPU at 90 % in the fake NVML) and idle ones (0 %), and stop
their server after the last busy period. A busy period needs a GPU: a person without
one (refused, waiting, or reclaimed while idle) asks for one and waits. Measured:
refused spawns, the wait from wanting a GPU to holding one, the share of assigned
GPU time that was idle, and the time until everyone is done.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from bench_spawn import built_deb
from booted import TOP, Appliance, free_port
from container import Container

sys.path.insert(0, str(TOP / "tests" / "fake_nvml"))
from build import build  # noqa: E402

UUID = "GPU-be000000-0000-0000-0000-00000000000{}"
MIG_UUID = "MIG-be000000-0000-0000-0000-0000000000{}{}"
SEATS = 4
MIGS = 7  # 1g.10gb devices of an 80 GB A100, GPU instances 1..7
CAP_MINOR = 100  # nvidia-caps minors of the fake MIG devices start here
RETRY = 10.0  # seconds a refused person waits before asking again (no queue)


@dataclass
class Person:
    name: str
    arrive: float
    periods: list[tuple[str, float]]  # ("busy" | "idle", seconds), starting and ending busy
    waits: list[float] = field(default_factory=list)
    refused: int = 0
    done: float | None = None
    phase: str = "away"  # what the fake NVML shows for their GPU: "busy" or anything else (0 %)


def workload(users: int, seed: int, scale: float) -> list[Person]:
    rng = random.Random(seed)
    people = []
    for i in range(users):
        periods: list[tuple[str, float]] = []
        for k in range(rng.randint(2, 3)):
            if k:
                periods.append(("idle", rng.uniform(20, 40) * scale))
            periods.append(("busy", rng.uniform(10, 20) * scale))
        people.append(Person(f"day{i:02d}", rng.uniform(0, 40) * scale, periods))
    return people


def caps(gpu: int, gi: int) -> tuple[int, int]:
    base = CAP_MINOR + 2 * (gpu * MIGS + gi)
    return base, base + 1


def nvml(gpus: int, util: dict[str, int], mig: bool) -> str:
    """The fake NVML's configuration: each GPU's utilization from its holders'."""
    text = "driver 550.54.14\n" + "".join(
        f"gpu index={i} minor={i} uuid={UUID.format(i)} name=NVIDIA_A100-SXM4-80GB mem_total={80 * 2**30} "
        f"util_gpu={util.get(UUID.format(i), 0)} pci=00000000:0{i + 1}:00.0 mig={int(mig)}\n" for i in range(gpus))
    if mig:
        text += "".join(f"mig gpu={i} gi={gi} ci=0 profile=1g.10gb uuid={MIG_UUID.format(i, gi)} "
                        f"mem_total={10 * 2**30}\n" for i in range(gpus) for gi in range(1, MIGS + 1))
    return text


def mig_minors(gpus: int) -> str:
    return "".join(f"gpu{i}/gi{gi}/access {caps(i, gi)[0]}\ngpu{i}/gi{gi}/ci0/access {caps(i, gi)[1]}\n"
                   for i in range(gpus) for gi in range(1, MIGS + 1))


class Day:
    """One run of the workload against the booted appliance, through the hub's REST API."""

    def __init__(self, app: Appliance, token: str, people: list[Person], gpus: int, mig: bool):
        self.app, self.people, self.gpus, self.mig = app, people, gpus, mig
        self.api = f"{app.url}/hub/api"
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"token {token}"
        self.lock = threading.Lock()
        self.written = ""
        self.assigned = 0.0  # GPU-seconds held by someone
        self.idle = 0.0  # of which the GPU was idle
        self.stop_sampling = threading.Event()

    # --- the hub --------------------------------------------------------------------

    def server(self, name: str) -> dict:
        return self.s.get(f"{self.api}/users/{name}", timeout=30).json().get("servers", {}).get("", {})

    def get_gpu(self, p: Person) -> None:
        """Ask until the server is ready, as a person would: a refusal is counted,
        and they ask again RETRY seconds later. The wait counts from the first ask."""
        t0 = time.monotonic()
        while True:
            r = self.s.post(f"{self.api}/users/{p.name}/server", json={"gpus": 1}, timeout=120)
            if r.status_code in (401, 403, 404):  # the benchmark's own mistake, not a refusal
                raise RuntimeError(f"POST {r.url}: {r.status_code} {r.text[:200]}")
            if r.status_code == 400 and "pending stop" in r.text:
                # Their own server is being stopped (reclaimed): ask again once it is, not a refusal.
                while self.server(p.name).get("pending"):
                    time.sleep(0.25)
                continue
            if r.status_code in (201, 202) or (r.status_code == 400 and "pending" in r.text):
                while (srv := self.server(p.name)).get("pending"):
                    time.sleep(0.25)
                if srv.get("ready"):
                    p.waits.append(time.monotonic() - t0)
                    return
            p.refused += 1
            time.sleep(RETRY)

    def has_server(self, name: str) -> bool:
        return bool(self.server(name).get("ready"))

    def stop(self, name: str) -> None:
        self.s.delete(f"{self.api}/users/{name}/server", timeout=60)

    # --- the fake NVML and the measurement -------------------------------------------

    def holders(self) -> dict[str, list[str]]:
        """GPU (or MIG device) UUID -> who holds it: one each, or a shared GPU's seats."""
        report = json.loads(self.app.sh("applctl gpus --json").stdout)
        return {g["uuid"]: g.get("holders") or ([g["holder"]] if g["holder"] else []) for g in report["gpus"]}

    def sample_forever(self, every: float = 1.0) -> None:
        """Set each GPU's utilization from its holders' phase (busy if one is), and
        add up the time of places held (a seat, a MIG device or a GPU), and idle."""
        phase = {p.name: p for p in self.people}
        last = time.monotonic()
        while not self.stop_sampling.is_set():
            held = self.holders()
            busy = {h for hs in held.values() for h in hs if phase.get(h) and phase[h].phase == "busy"}
            util = {u: 90 if set(hs) & busy else 0 for u, hs in held.items()}
            text = nvml(self.gpus, util, self.mig)
            if text != self.written:
                self.app.ct.write("/etc/fake-nvml.conf", text)
                self.written = text
            now = time.monotonic()
            dt, last = now - last, now
            with self.lock:
                for hs in held.values():
                    self.assigned += dt * len(hs)
                    self.idle += dt * sum(h not in busy for h in hs)
            self.stop_sampling.wait(every)

    # --- a person's day -------------------------------------------------------------

    def live(self, p: Person, t0: float) -> None:
        time.sleep(max(0.0, t0 + p.arrive - time.monotonic()))
        for kind, seconds in p.periods:
            if kind == "busy" and not self.has_server(p.name):
                self.get_gpu(p)
            p.phase = kind
            time.sleep(seconds)
        p.phase = "away"
        self.stop(p.name)
        p.done = time.monotonic() - t0

    def run(self) -> float:
        t0 = time.monotonic()
        sampler = threading.Thread(target=self.sample_forever, daemon=True)
        sampler.start()
        errors: list[str] = []

        def live(p: Person) -> None:
            try:
                self.live(p, t0)
            except Exception as e:  # noqa: BLE001 - reported below, the run is void
                errors.append(f"{p.name}: {e}")

        threads = [threading.Thread(target=live, args=(p,)) for p in self.people]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.stop_sampling.set()
        sampler.join()
        if errors:
            raise SystemExit("bench-gpu-sharing: the run is void: " + "; ".join(errors[:3]))
        return time.monotonic() - t0


def pct(values: list[float], q: float) -> float | None:
    ok = sorted(values)
    return ok[min(len(ok) - 1, int(round(q * (len(ok) - 1))))] if ok else None


def run_mode(app: Appliance, token: str, people: list[Person], gpu_toml: str, gpus: int, mig: bool) -> dict:
    app.ct.write("/etc/fake-nvml.conf", nvml(gpus, {}, mig))
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text("[culler]\nenabled = false\n" + gpu_toml))
    app.sh("applctl reload >/dev/null")
    app.wait_hub()
    day = Day(app, token, people, gpus, mig)
    makespan = day.run()
    waits = [w for p in people for w in p.waits]
    return {"served": sum(p.done is not None for p in people), "refused_spawns": sum(p.refused for p in people),
            "waits": len(waits),
            "wait_median_s": statistics.median(waits) if waits else None, "wait_p95_s": pct(waits, 0.95),
            "gpu_seconds_assigned": round(day.assigned, 1), "gpu_seconds_idle": round(day.idle, 1),
            "idle_share": round(day.idle / day.assigned, 3) if day.assigned else None,
            "everyone_done_s": round(makespan, 1)}


SETUPS = {"today": "today (no queue, no reclaim)", "queue": "whole GPUs: queue + reclaim",
          "seats": f"{SEATS} seats per GPU: queue + reclaim", "mig": f"MIG 1g.10gb x{MIGS}: queue + reclaim"}


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench-gpu-sharing")
    ap.add_argument("--users", type=int, default=12)
    ap.add_argument("--scale", type=float, default=1.0, help="stretch every period by this factor")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, default=Path("bench-gpu-sharing.json"))
    ap.add_argument("--deb", type=Path)
    ap.add_argument("--gpus", type=int, default=4, help="fake GPUs (1 to 8)")
    ap.add_argument("--setups", default="today,queue", help="comma-separated: " + ", ".join(SETUPS))
    args = ap.parse_args()
    setups = args.setups.split(",")
    if not 1 <= args.users <= 100 or not 0.1 <= args.scale <= 100 or not 1 <= args.gpus <= 8 \
            or not setups or set(setups) - set(SETUPS):
        sys.exit("bench-gpu-sharing: --users takes 1 to 100, --scale 0.1 to 100, --gpus 1 to 8, --setups some of "
                 + ", ".join(SETUPS))
    deb = built_deb(args.deb)
    queue = ("[gpu]\nqueue = true\nreclaim = \"when-needed\"\nsample_interval = 1\n"
             f"idle_timeout = {max(10, round(10 * args.scale))}\nqueue_timeout = 7200\n")
    shared = ", ".join(f'"{i}" = {SEATS}' for i in range(args.gpus))
    toml = {"today": "[gpu]\nqueue = false\nreclaim = \"never\"\n", "queue": queue, "mig": queue,
            "seats": queue.replace("[gpu]\n", f"[gpu]\nshared = {{ {shared} }}\n")}
    results: dict[str, dict] = {}
    ct = Container("gpubench")
    try:
        ct.boot()
        ct.install_deb(deb)
        app = Appliance(ct, free_port(), free_port(), free_port())
        ct.copy_in(build(Path(tempfile.mkdtemp(prefix="bench-nvml-"))), "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1")
        ct.write("/etc/fake-nvml.conf", nvml(args.gpus, {}, False))
        ct.run("".join(f"mknod -m 666 /dev/nvidia{i} c 195 {i}; " for i in range(args.gpus))
               + "mknod -m 666 /dev/nvidiactl c 195 255; mknod -m 666 /dev/nvidia-uvm c 509 0; "
                 "mknod -m 666 /dev/nvidia-uvm-tools c 509 1; mkdir -p /dev/nvidia-caps; "
               + "".join(f"mknod -m 444 /dev/nvidia-caps/nvidia-cap{c} c 508 {c}; "
                         for i in range(args.gpus) for gi in range(1, MIGS + 1) for c in caps(i, gi)))
        # The driver's MIG minors, where the daemon reads them (as tests/system/test_5_gpu_mig.py does).
        ct.write("/etc/fake-nvidia-caps/mig-minors", mig_minors(args.gpus))
        ct.write("/etc/systemd/system/jupyterhub-appliance.service.d/fake-nvml.conf",
                 "[Service]\nEnvironment=FAKE_NVML_CONFIG=/etc/fake-nvml.conf\nTemporaryFileSystem=/proc/driver\n"
                 "BindReadOnlyPaths=/etc/fake-nvidia-caps:/proc/driver/nvidia-caps\n")
        names = [p.name for p in workload(args.users, args.seed, args.scale)]
        ct.run("".join(f"useradd -m {u} && gpasswd -a {u} jupyterhub-users >/dev/null\n" for u in names))
        ct.write("/etc/jupyterhub/appliance.toml", app.config_text())
        ct.run("systemctl daemon-reload && systemctl start jupyterhub")
        app.wait_hub()
        token = ct.run("applctl token --service").stdout.strip()
        # The hub knows a person once they log in; here nobody does, so make them.
        r = requests.post(f"{app.url}/hub/api/users", json={"usernames": names},
                          headers={"Authorization": f"token {token}"}, timeout=60)
        if r.status_code not in (201, 409):
            raise SystemExit(f"bench-gpu-sharing: could not create the hub's users: {r.status_code} {r.text[:200]}")
        for setup in setups:
            print(f"running: {SETUPS[setup]} ...", flush=True)
            results[SETUPS[setup]] = run_mode(app, token, workload(args.users, args.seed, args.scale), toml[setup],
                                              args.gpus, setup == "mig")
    finally:
        ct.destroy()
    print(f"\n{args.users} people on {args.gpus} GPUs, seed {args.seed}, scale {args.scale}")
    cols = ("served", "refused_spawns", "wait_median_s", "wait_p95_s", "idle_share", "everyone_done_s")
    print(f"{'':<36}" + "".join(f"{c:>16}" for c in cols))
    for label, r in results.items():
        print(f"{label:<36}" + "".join(f"{'-' if r[c] is None else round(r[c], 2):>16}" for c in cols))
    args.json.write_text(json.dumps({"users": args.users, "gpus": args.gpus, "seed": args.seed, "scale": args.scale,
                                     "modes": results}, indent=2))
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
