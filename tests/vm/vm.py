"""A Debian 13 VM (the default release) on a real kernel (qemu + KVM), for what the
nspawn container cannot prove: memory and CPU limits, OOM kills, reboots
(../shared/TESTING.md).

KVM is used when it boots Debian's kernel. Some hosts have a /dev/kvm that cannot:
a PVM host (kvm_pvm, no hardware virtualisation) runs only kernels built as PVM
guests, and there Debian's kernel hangs right after its real-mode setup. Then the
same image and kernel run under qemu's emulator (TCG): slower, but the same real
kernel, cgroups and OOM killer. `accelerator()` says which, and why.

The image is made once from Debian's archive alone and cached: debootstrap with
linux-image-amd64, openssh-server and the appliance's dependencies, written into
an ext4 image with `mkfs.ext4 -d` (no loop device). Each VM boots a copy-on-write
overlay of it with direct kernel boot, and is driven over ssh with a key made for
the cache.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from container import DEFAULT_RELEASE  # noqa: E402
from machine import Machine, MachineError  # noqa: E402

RELEASE = DEFAULT_RELEASE  # the system tier's full suite runs on it too, and so does this tier
CACHE = Path(os.environ.get("APPLIANCE_TEST_CACHE", "/var/cache/jupyterhub-appliance-test")) / f"vm-{RELEASE}"
MIRROR = os.environ.get("APPLIANCE_TEST_MIRROR", "http://deb.debian.org/debian")
PACKAGES = "systemd,systemd-sysv,dbus,sudo,ca-certificates,iproute2,procps,openssh-server,udev,kmod"
# Installed with apt after debootstrap (whose resolver cannot place node's packages):
# a kernel, and the appliance's Depends (packaging/debian/control.in), so installing
# the .deb needs no download.
EXTRA = ("linux-image-amd64", "initramfs-tools", "python3", "passwd", "libpam-runtime", "nodejs",
         "node-configurable-http-proxy")
IMAGE_VERSION = "1"  # bump when the image recipe changes
PASSWORD = "vm-pass-1"  # of the test users made in the VM
image_seconds: float | None = None  # how long this run took to make the image (None: cached)


class VMError(MachineError):
    pass


def missing() -> str | None:
    """Why this tier cannot run here, or None."""
    if os.geteuid() != 0:
        return "the VM tier needs root (it debootstraps an image)"
    tools = [t for t in ("qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4", "ssh") if not shutil.which(t)]
    if tools:
        return "the VM tier needs " + ", ".join(tools) + " (scripts/host-tools installs them)"
    return None


def _run(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, **kw)


_IMAGE_LOCK = threading.Lock()


def prepare_in_background() -> None:
    """Start making the image now, while other tiers run: it is mostly downloads and
    disk, and takes minutes that the VM tier would otherwise wait at its start. A
    failure here is left for ensure_image() to meet again, and report, in the tier."""
    def make():
        try:
            ensure_image()
        except Exception:
            pass
    threading.Thread(target=make, name="vm-image", daemon=True).start()


def ensure_image() -> Path:
    """CACHE with image.raw, vmlinuz, initrd.img and the ssh key, made on first use (a few minutes)."""
    with _IMAGE_LOCK:
        return _ensure_image()


def _ensure_image() -> Path:
    global image_seconds
    marker = CACHE / f".complete-{IMAGE_VERSION}"
    if marker.exists():
        return CACHE
    t0 = time.monotonic()
    shutil.rmtree(CACHE, ignore_errors=True)
    root = CACHE / "root"
    root.mkdir(parents=True)
    _run("debootstrap", "--variant=minbase", f"--include={PACKAGES}", RELEASE, str(root), MIRROR,
         stdout=subprocess.DEVNULL)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run("mount", "-t", "proc", "proc", str(root / "proc"))
    try:
        _run("chroot", str(root), "apt-get", "update", "-q", stdout=subprocess.DEVNULL, env=env)
        _run("chroot", str(root), "apt-get", "install", "-y", "-q", "--no-install-recommends", *EXTRA,
             stdout=subprocess.DEVNULL, env=env)
    finally:
        _run("umount", str(root / "proc"))
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(CACHE / "id_ed25519"))
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(CACHE / "id_ed25519.pub", ssh_dir / "authorized_keys")
    (root / "etc/hostname").write_text("appliance-vm\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 appliance-vm\n")
    (root / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
    (root / "etc/systemd/network/80-dhcp.network").write_text("[Match]\nName=en*\n\n[Network]\nDHCP=yes\n")
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("nameserver 10.0.2.3\n")  # qemu's user network
    _run("chroot", str(root), "systemctl", "enable", "systemd-networkd", "ssh", stdout=subprocess.DEVNULL,
         stderr=subprocess.DEVNULL)
    _run("chroot", str(root), "apt-get", "clean")
    boot = root / "boot"
    shutil.copy(next(boot.glob("vmlinuz-*")), CACHE / "vmlinuz")
    shutil.copy(next(boot.glob("initrd.img-*")), CACHE / "initrd.img")
    _run("mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(CACHE / "image.raw"), "6G")
    shutil.rmtree(root)
    marker.touch()
    image_seconds = time.monotonic() - t0
    return CACHE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Chosen at the first boot: ("kvm" | "tcg", why).
_ACCEL: tuple[str, str] | None = None
KVM_SIGN_OF_LIFE = 30  # s for a KVM guest's kernel to print its banner; Debian's takes ~1 s


def accelerator() -> tuple[str, str]:
    return _ACCEL or ("kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg", "not yet booted")


def _qemu_accel(accel: str) -> list[str]:
    # -cpu host only under KVM; the emulator's "max" has every feature it can emulate.
    return ["-enable-kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg,thread=multi", "-cpu", "max"]


class VM(Machine):
    """run, write, wait_for, unit_props, wait_unit: tests/machine.py."""

    Error = VMError

    def __init__(self, name: str, forward: tuple[int, ...] = (), memory_mib: int = 3072, cpus: int = 2):
        """forward: guest TCP ports reachable at 127.0.0.1:self.ports[guest_port] on the host."""
        self.name, self.memory_mib, self.cpus = name, memory_mib, cpus
        self.dir = Path("/var/tmp") / f"appliance-vm-{name}"
        self.ssh_port = free_port()
        self.ports = {p: free_port() for p in forward}
        self.proc: subprocess.Popen | None = None

    def boot(self, timeout: float = 180) -> "VM":
        cache = ensure_image()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        _run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(cache / "image.raw"),
             str(self.dir / "disk.qcow2"))
        self.start(timeout)
        return self

    def start(self, timeout: float = 180) -> None:
        """Power on (again, after a shutdown) and wait for ssh."""
        global _ACCEL
        if _ACCEL is None:
            if os.access("/dev/kvm", os.R_OK | os.W_OK):
                self._power_on("kvm")
                why = self._kvm_boots()
                if why is None:
                    _ACCEL = ("kvm", "KVM")
                else:
                    self._power_off()
                    _ACCEL = ("tcg", f"qemu's emulator (TCG): {why}")
            else:
                _ACCEL = ("tcg", "qemu's emulator (TCG): there is no usable /dev/kvm")
        if self.proc is None or self.proc.poll() is not None:
            self._power_on(_ACCEL[0])
        self.wait_ssh(timeout * (3 if _ACCEL[0] == "tcg" else 1))

    def _kvm_boots(self) -> str | None:
        """None once the guest kernel prints its banner; else why KVM will not do."""
        console = self.dir / "console.log"
        deadline = time.monotonic() + KVM_SIGN_OF_LIFE
        while time.monotonic() < deadline:
            text = console.read_text(errors="replace") if console.exists() else ""
            if "Linux version" in text:
                return None
            if self.proc.poll() is not None:
                return f"qemu with KVM exited with {self.proc.returncode}"
            time.sleep(0.5)
        pvm = Path("/sys/module/kvm_pvm").exists()
        return (f"Debian's kernel printed nothing in {KVM_SIGN_OF_LIFE} s under KVM"
                + (" (this host's KVM is kvm_pvm, which runs only PVM guest kernels)" if pvm else ""))

    def _power_off(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(20)

    def _power_on(self, accel: str) -> None:
        (self.dir / "console.log").unlink(missing_ok=True)
        fwd = "".join(f",hostfwd=tcp:127.0.0.1:{h}-:{g}" for g, h in [(22, self.ssh_port), *self.ports.items()])
        self.proc = subprocess.Popen(
            ["qemu-system-x86_64", *_qemu_accel(accel), "-m", str(self.memory_mib), "-smp", str(self.cpus),
             "-kernel", str(CACHE / "vmlinuz"), "-initrd", str(CACHE / "initrd.img"),
             "-append", "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1",
             # A throwaway overlay: cache=unsafe spares the guest's fsyncs (dpkg makes many).
             "-drive", f"file={self.dir / 'disk.qcow2'},if=virtio,format=qcow2,cache=unsafe",
             "-nic", f"user,model=virtio-net-pci{fwd}", "-display", "none",
             "-serial", f"file:{self.dir / 'console.log'}", "-no-reboot"],
            stdin=subprocess.DEVNULL, stdout=open(self.dir / "qemu.log", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True)

    def wait_ssh(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise VMError(f"qemu exited with {self.proc.returncode}; see {self.dir} (console.log, qemu.log)")
            if self.run("systemctl is-system-running --wait", check=False, timeout=60).stdout.strip() in (
                    "running", "degraded"):
                return
            time.sleep(1)
        raise VMError(f"VM {self.name} did not come up in {timeout} s; see {self.dir / 'console.log'}")

    def ssh_argv(self) -> list[str]:
        return ["ssh", "-q", "-i", str(CACHE / "id_ed25519"), "-p", str(self.ssh_port),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
                "-o", "BatchMode=yes", "root@127.0.0.1"]

    def _argv(self, command: str, user: str | None) -> list[str]:
        if user:
            command = f"runuser -u {user} -- sh -c {_quote(command)}"
        return self.ssh_argv() + [command]

    def copy_in(self, src: Path, dest: str) -> None:
        with open(src, "rb") as f:
            subprocess.run(self.ssh_argv() + [f"cat > {_quote(dest)}"], stdin=f, check=True, timeout=300)

    def reboot(self, timeout: float = 180) -> None:
        """A real reboot of the guest: its systemd shuts down, the kernel restarts
        (qemu runs with -no-reboot, so the machine powers off and is started again)."""
        self.run("systemctl reboot", check=False, timeout=30)
        assert self.proc is not None
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            raise VMError("the VM did not shut down for the reboot in 120 s") from None
        self.start(timeout)

    def destroy(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"
