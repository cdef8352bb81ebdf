"""Change a web server's configuration as one step: save what is there, write the
new files, let the server check them and reload; if the check or the reload
fails, put back exactly what was there (files, links, modules) and reload that.

All paths here are under /etc and owned by root; nothing follows a link a less
privileged user could have made (see trusted_file for the certificate and key an
administrator names).
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .. import privilege
from ..files import write_atomic
from ..tools import resolved
from .layout import APACHE_MODULES, Layout, included


class SetupError(RuntimeError):
    """The web server refused the change, or it cannot be made: nothing was changed."""


@dataclass
class Saved:
    """One path as it was: absent, a link (its target) or a file (bytes and owner)."""
    path: Path
    kind: str
    data: bytes | str = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0

    @classmethod
    def of(cls, path: Path) -> "Saved":
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return cls(path, "absent")
        if stat.S_ISLNK(st.st_mode):
            return cls(path, "link", os.readlink(path))
        if not stat.S_ISREG(st.st_mode):
            raise SetupError(f"{path} is neither a file nor a link; move it away first")
        return cls(path, "file", path.read_bytes(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)

    def put_back(self) -> None:
        if os.path.lexists(self.path):
            os.unlink(self.path)
        if self.kind == "link":
            os.symlink(self.data, self.path)
        elif self.kind == "file":
            write_file(self.path, self.data, self.mode, self.gid, self.uid)


def write_file(path: Path, data: bytes | str, mode: int, gid: int = 0, uid: int = 0) -> None:
    """A file of root's (or uid's), its directory made if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, mode, (uid, gid))


def _run(argv: tuple[str, ...] | list[str]) -> tuple[bool, str]:
    try:
        p = subprocess.run(resolved(argv), capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    said = "\n".join(x for x in (p.stdout.strip(), p.stderr.strip()) if x)
    return p.returncode == 0, said


def is_active(service: str) -> bool:
    return _run(["systemctl", "is-active", "--quiet", service])[0]


def ready(lay: Layout) -> None:
    """The web server is installed and (on Arch) includes the site: else say what to do."""
    if not Path(lay.binary).exists():
        raise SetupError(f"{lay.kind} is not installed: install the {lay.package} package first")
    if not included(lay):
        raise SetupError(f"{lay.includer} does not include the site yet: add the line\n    {lay.include_line}")


class Change:
    """with Change(lay, extra_paths) as ch: write...; ch.commit(): check and reload, or undo."""

    def __init__(self, lay: Layout, extra: list[Path] = ()):
        self.lay = lay
        self.saved = [Saved.of(p) for p in [*lay.touched, *extra]]
        self.modules = set(os.listdir(lay.modules_dir)) if lay.modules_dir and lay.modules_dir.is_dir() else None
        self.was_active = is_active(lay.service)
        self.told = False  # whether the server was told to reload or restart
        self.done = False

    def __enter__(self) -> "Change":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.done:
            self.undo()

    def enable_modules(self) -> bool:
        """Debian's Apache: a2enmod what the site needs; True if any was off."""
        if self.modules is None:
            return False
        ok, said = _run(["a2enmod", "-q", *APACHE_MODULES])
        if not ok:
            raise SetupError(f"a2enmod {' '.join(APACHE_MODULES)} failed: {said}")
        return set(os.listdir(self.lay.modules_dir)) != self.modules

    def commit(self, restart: bool = False) -> None:
        ok, said = _run(self.lay.check)
        if not ok:
            self._fail(f"{' '.join(self.lay.check)} refused the new configuration:\n{_indent(said)}")
        verb = "restart" if restart or not self.was_active else "reload"
        workers = _workers(self.lay.service)
        self.told = True
        ok, said = _run(["systemctl", verb, self.lay.service])
        if not ok:
            self._fail(f"systemctl {verb} {self.lay.service} failed:\n{_indent(said)}")
        if verb == "reload":
            _wait_for_new_workers(self.lay.service, workers)
        self.done = True

    def _fail(self, why: str) -> None:
        self.undo()
        back = "it is running as before" if self.was_active else "it was not running and still is not"
        raise SetupError(f"{why}\nnothing was changed: the previous files are back and {self.lay.service} "
                         f"has them ({back})")

    def undo(self) -> None:
        for s in reversed(self.saved):
            s.put_back()
        if self.modules is not None:
            for name in set(os.listdir(self.lay.modules_dir)) - self.modules:
                os.unlink(self.lay.modules_dir / name)
        if self.was_active and self.told:
            # The old configuration passed before; a restart brings it back even if
            # the failed reload left the server down. A server never told to reload
            # (its check refused the change) still runs the old one: restarting it
            # would only cut every open connection, kernels' websockets included.
            _run(["systemctl", "restart", self.lay.service])
        self.done = True


def _workers(service: str) -> set[int]:
    """The children of the service's main process (nginx's and Apache's workers)."""
    ok, pid = _run(["systemctl", "show", "-p", "MainPID", "--value", service])
    try:
        return {int(p) for p in Path(f"/proc/{int(pid)}/task/{int(pid)}/children").read_text().split()}
    except (OSError, ValueError):
        return set()


def _retired(pid: int) -> bool:
    """Gone, or an nginx worker told to finish (it closed its listening sockets)."""
    try:
        return b"shutting down" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def _wait_for_new_workers(service: str, before: set[int], timeout: float = 10) -> None:
    """Both servers' reload only signals the main process and returns. Until it has
    started workers with the new configuration and retired the old ones, an old
    worker may still take a new connection (and, say, serve without the site
    password just set). Apache's old children may keep open websockets for hours:
    after `timeout` the change is in place for everything new anyway."""
    deadline = time.monotonic() + timeout
    while before and time.monotonic() < deadline:
        if _workers(service) - before and all(_retired(pid) for pid in before):
            return
        time.sleep(0.05)


def _indent(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()][-12:]
    return "\n".join("    " + line for line in lines) or "    (it said nothing)"


def write_site(lay: Layout, text: str) -> None:
    write_file(lay.site, text, 0o644)
    if lay.enabled is not None:
        if os.path.lexists(lay.enabled):
            os.unlink(lay.enabled)
        os.symlink(os.path.relpath(lay.site, lay.enabled.parent), lay.enabled)


def remove_site(lay: Layout) -> None:
    for p in (lay.enabled, lay.site):
        if p is not None and os.path.lexists(p):
            os.unlink(p)


def trusted_file(option: str, path: str, secret: bool = False) -> Path:
    """A certificate or key the web server (root) will read, as written into the
    site: a regular file that only root can change, reached through directories (and
    links, hop by hop) only root can change, so nobody can swap it, or a link on its
    way, for something else. The path stays as given, so a renewal that moves a link
    (certbot's live/ directory) is picked up."""
    try:
        st = os.stat(path)
        found = privilege.redirectable(path)
    except OSError as e:
        raise SetupError(f"{option} {path}: {e.strerror.lower()}; give an existing file") from None
    if not stat.S_ISREG(st.st_mode):
        raise SetupError(f"{option} {path} is not a regular file")
    if found:
        raise SetupError(f"{option} {path}: {found[0]} is {found[1]}, so someone other than root could put "
                         "another file in its place; keep certificates and keys, and any link to them, in "
                         "directories only root can write, e.g. /etc/ssl")
    if secret and st.st_mode & 0o004:
        raise SetupError(f"{option} {path} is readable by everyone: chmod 600 it (a private key)")
    return Path(path)

