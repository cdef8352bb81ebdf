"""A booted Debian in systemd-nspawn, for the system tests and scripts/run-appliance:
Debian 13 (trixie, the default) or Debian 12 (bookworm).

Recipe and facts: ../shared/TESTING.md. Each release's debootstrapped tree is made
once and kept in CACHE; every container boots a fresh copy of it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine import Machine, MachineError  # noqa: E402

CACHE = Path(os.environ.get("APPLIANCE_TEST_CACHE", "/var/cache/jupyterhub-appliance-test"))
MIRROR = os.environ.get("APPLIANCE_TEST_MIRROR", "http://deb.debian.org/debian")
PACKAGES = "systemd,systemd-sysv,dbus,sudo,ca-certificates,iproute2,procps"
# The releases the appliance is built and tested for, and the one used by default.
RELEASES = {"trixie": "Debian 13", "bookworm": "Debian 12"}
DEFAULT_RELEASE = "trixie"
bootstrapped: dict[str, float] = {}  # seconds each base took to make in this run
_base_lock = threading.Lock()


class ContainerError(MachineError):
    pass


def missing_tools() -> list[str]:
    return [t for t in ("debootstrap", "systemd-nspawn", "nsenter") if shutil.which(t) is None]


def unified_cgroup_root() -> Path:
    """Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup, or
    /sys/fs/cgroup/unified on a host in hybrid mode."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[:1] == ["cgroup2"]:
            return Path(left.split()[4])
    raise ContainerError("no cgroup2 hierarchy is mounted on this host (systemd-nspawn needs one)")


def check_release(release: str) -> str:
    if release not in RELEASES:
        raise ValueError(f"unknown Debian release {release!r}; accepted: {', '.join(RELEASES)}")
    return release


def ensure_base(release: str = DEFAULT_RELEASE) -> Path:
    """The release's pristine tree, debootstrapped on first use (about a minute); the
    tests may start it in the background while the .deb builds."""
    with _base_lock:
        CACHE.mkdir(parents=True, exist_ok=True)
        # Also across processes: a whole run's lanes (scripts/test) may both want it first.
        with open(CACHE / f"{check_release(release)}-base.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return _ensure_base(release)


def _ensure_base(release: str) -> Path:
    base = CACHE / f"{check_release(release)}-base"
    marker = base / ".complete"
    if marker.exists():
        return base
    t0 = time.monotonic()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f"{release}-base.tmp.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", release, str(tmp), MIRROR],
                   check=True, stdout=subprocess.DEVNULL)
    # apt lists in the base, so each container's install starts without an update.
    subprocess.run(["chroot", str(tmp), "apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
    (tmp / ".complete").touch()
    if marker.exists():  # another run made it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
        return base
    shutil.rmtree(base, ignore_errors=True)
    tmp.rename(base)
    bootstrapped[release] = time.monotonic() - t0
    return base


class Container(Machine):
    """run, write, wait_for, unit_props, wait_unit: tests/machine.py."""

    Error = ContainerError
    # A clean environment: the host's PATH or LANG has no business inside.
    ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

    def __init__(self, name: str, root_parent: Path = Path("/var/tmp"), release: str = DEFAULT_RELEASE):
        self.name = name
        self.release = check_release(release)
        self.root = root_parent / f"appliance-ct-{name}"
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None  # the container's PID 1, as the host sees it

    def boot(self, timeout: float = 120) -> "Container":
        base = ensure_base(self.release)
        self.destroy_root()
        subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(self.root)], check=True)
        self._hosts_file()
        env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        log = open(self.root.with_suffix(".log"), "wb")
        procs = self._own_cgroup() / "cgroup.procs"
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "-D", str(self.root), "-b", "--register=no", "--keep-unit", "--console=pipe",
             "--capability=all", "--system-call-filter=bpf @privileged", "-M", self.name],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=lambda: procs.write_text("0"),  # nspawn itself, before it makes payload/ beside it
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited with {self.proc.returncode}; see {log.name}")
            children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
            if children:
                self.pid = int(children[0])
                state = self.run("systemctl is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return self
            time.sleep(0.5)
        raise ContainerError(f"container {self.name} did not boot in {timeout} s")

    def _argv(self, command: str, user: str | None) -> list[str]:
        assert self.pid is not None, "container not booted"
        argv = ["nsenter", "-t", str(self.pid), "-a", "--"]
        if user:
            argv += ["runuser", "-u", user, "--"]
        return argv + ["/bin/sh", "-c", command]

    def copy_in(self, src: Path, dest: str) -> None:
        target = self.root / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)

    def install_deb(self, deb: Path) -> subprocess.CompletedProcess:
        self.copy_in(deb, f"/root/{deb.name}")
        return self.run(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /root/{deb.name}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        self.pid = None
        self._remove_cgroup()

    def _hosts_file(self) -> None:
        """/etc/hosts as Debian's installer writes it, with the host name on 127.0.1.1.
        debootstrap writes none, and a name the resolver must ask DNS for (unreachable
        here) made every sudo wait seconds ("unable to resolve host")."""
        hosts = self.root / "etc/hosts"
        if hosts.exists():
            return
        name_file = self.root / "etc/hostname"
        name = name_file.read_text().strip() if name_file.exists() else self.name
        hosts.write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
                         "ff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n")

    def _own_cgroup(self) -> Path:
        """A host cgroup for this container alone. nspawn --keep-unit puts the
        container in payload/ beside itself: two containers started from one cgroup
        (the main run's and a lane's beside it, scripts/test) would share it, and a
        service of the same name in both would be one cgroup, stopped in both at once."""
        cg = unified_cgroup_root() / f"appliance-ct-{self.name}"
        self._remove_cgroup()
        cg.mkdir()
        return cg

    def _remove_cgroup(self) -> None:
        """The container's cgroup tree, once its processes are gone (rmdir, deepest first)."""
        cg = unified_cgroup_root() / f"appliance-ct-{self.name}"
        if cg.is_dir():
            for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [cg]:
                try:
                    d.rmdir()
                except OSError:
                    pass

    def destroy_root(self) -> None:
        if self.root.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.root)], check=False)

    def destroy(self) -> None:
        self.stop()
        self.destroy_root()
