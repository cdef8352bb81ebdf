"""What applctl reads from and asks of the host: systemctl, the journal, /proc."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from .. import password_check
from ..tools import resolved, tool
from .output import Failure

HUB, PROXY, DAEMON, SOCKET = ("jupyterhub.service", "jupyterhub-proxy.service",
                              "jupyterhub-appliance.service", "jupyterhub-appliance.socket")
PAM, PAM_SOCKET = password_check.SERVICE_UNIT, password_check.UNIT


def run(argv: list[str], what: str | None = None, input: str | None = None) -> str:
    """Run a tool; its own error message becomes a Failure."""
    try:
        proc = subprocess.run(resolved(argv), capture_output=True, text=True, input=input)
    except FileNotFoundError:
        raise Failure(f"{os.path.basename(argv[0])} is not installed") from None
    if proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise Failure(f"{what or ' '.join(argv)} failed: {said[-1] if said else f'exit {proc.returncode}'}")
    return proc.stdout


def unit_props(unit: str, *names: str) -> dict[str, str]:
    proc = subprocess.run([tool("systemctl"), "show", unit, *(f"--property={n}" for n in names)],
                          capture_output=True, text=True)
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def active_state(unit: str) -> str:
    return unit_props(unit, "ActiveState").get("ActiveState") or "unknown"


def is_loaded(unit: str) -> bool:
    return unit_props(unit, "LoadState").get("LoadState") == "loaded"


def systemctl(*args: str) -> None:
    run(["systemctl", *args], what="systemctl " + " ".join(args))


def monotonic_usec() -> int:
    """systemd's *TimestampMonotonic clock."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def uptime_seconds(props: dict[str, str]) -> float | None:
    """From ActiveEnterTimestampMonotonic; None when the unit never became active."""
    try:
        t = int(props.get("ActiveEnterTimestampMonotonic", "0"))
    except ValueError:
        return None
    return (monotonic_usec() - t) / 1e6 if t else None


def int_prop(props: dict[str, str], name: str) -> int | None:
    """A numeric property; None for systemd's '[not set]' or 'infinity'."""
    v = props.get(name, "")
    return int(v) if v.isdigit() and int(v) < 2**63 else None


def cores_prop(props: dict[str, str], name: str = "CPUQuotaPerSecUSec") -> float | None:
    """CPUQuotaPerSecUSec as systemctl shows it ("2s", "500ms", "infinity") in cores."""
    v = props.get(name, "")
    for suffix, per_core in (("ms", 1000.0), ("us", 1_000_000.0), ("s", 1.0)):
        number = v[:-len(suffix)]
        if v.endswith(suffix) and number.replace(".", "", 1).isdigit():
            return float(number) / per_core
    return None


def last_run_journal(unit: str, lines: int = 15) -> list[str]:
    """What the unit's latest run (its invocation) wrote: why it failed, without the
    lines of the run before it."""
    invocation = unit_props(unit, "InvocationID").get("InvocationID", "")
    subprocess.run([tool("journalctl"), "--sync"], capture_output=True)  # a crash's last lines, written now
    argv = [tool("journalctl"), "--no-pager", "--quiet", "-o", "cat", "-n", str(lines)]
    argv += [f"_SYSTEMD_INVOCATION_ID={invocation}"] if invocation else ["-u", unit]
    proc = subprocess.run(argv, capture_output=True, text=True)
    return [line for line in proc.stdout.splitlines() if line.strip()]


def main_pid_argv(unit: str) -> list[str] | None:
    pid = unit_props(unit, "MainPID").get("MainPID", "0")
    if pid in ("", "0"):
        return None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").rstrip("\0").split("\0")


# --- who listens on a TCP port -----------------------------------------------------

def listeners(proc: Path = Path("/proc")) -> dict[int, set[int]]:
    """Listening TCP port -> socket inodes, from /proc/net/tcp and tcp6."""
    out: dict[int, set[int]] = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A":  # TCP_LISTEN
                out.setdefault(int(f[1].rsplit(":", 1)[1], 16), set()).add(int(f[9]))
    return out


def _open_files(procdir: Path) -> set[str]:
    """What a process's descriptors point to. One closed while we look is skipped,
    not the whole process: PID 1 opens and closes descriptors all the time."""
    try:
        fds = os.listdir(procdir / "fd")
    except OSError:
        return set()
    out = set()
    for fd in fds:
        try:
            out.add(os.readlink(procdir / "fd" / fd))
        except OSError:
            continue
    return out


def _socket_names(inodes: set[int]) -> set[str]:
    return {f"socket:[{i}]" for i in inodes}


def socket_owners(inodes: set[int], proc: Path = Path("/proc")) -> list[tuple[int, str, str | None]]:
    """(pid, command, systemd unit) of the processes holding these sockets."""
    wanted = _socket_names(inodes)
    found = []
    for d in proc.iterdir():
        if d.name.isdigit() and wanted & _open_files(d):
            try:
                found.append((int(d.name), (d / "comm").read_text().strip(), _unit_of(d)))
            except OSError:
                continue
    return found


def held_by_systemd(port: int, listening: dict[int, set[int]] | None = None, proc: Path = Path("/proc")) -> bool:
    """Whether PID 1 holds a listening socket on this port: one of the sockets the
    appliance's generator writes (held_ports.py). Then no other process can listen
    there, and only the unit the socket was handed to accepts its connections."""
    listening = listeners(proc) if listening is None else listening
    return bool(_socket_names(listening.get(port, set())) & _open_files(proc / "1"))


def _unit_of(procdir: Path) -> str | None:
    try:
        cgroup = (procdir / "cgroup").read_text()
    except OSError:
        return None
    m = re.search(r"/([^/\n]+\.(?:service|scope))(?:/|$)", cgroup, re.M)
    return m.group(1) if m else None


def unit_rss(unit: str, cgroup_root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc")) -> int | None:
    """Bytes of memory resident in the unit's processes (their RSS, summed: what the
    kernel holds for them, which the cgroup's own count exceeds by the page cache).
    None when the unit runs no process."""
    group = unit_props(unit, "ControlGroup").get("ControlGroup", "")
    if not group:
        return None
    pids: set[str] = set()
    for directory, _, files in os.walk(cgroup_root / group.lstrip("/")):
        if "cgroup.procs" in files:
            try:
                pids |= set(Path(directory, "cgroup.procs").read_text().split())
            except OSError:
                continue
    total = 0
    for pid in pids:
        try:
            status = (proc / pid / "status").read_text()
        except OSError:  # gone meanwhile
            continue
        m = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.M)
        total += int(m.group(1)) * 1024 if m else 0
    return total if pids else None
