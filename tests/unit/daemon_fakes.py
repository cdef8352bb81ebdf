"""An in-process daemon on a real Unix socket, with systemd faked at the D-Bus call
level by conftest.FakeManager (so the real Systemd code, wait_for, list_units and
its job filter, runs)."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import tempfile
import threading
from pathlib import Path

from appliance import config, root_verdicts, users
from appliance.daemon import server, units
from appliance.daemon.gpus import GpuManager
from appliance.gpu.inventory import Inventory

from .conftest import GPUS, FakeManager, FakeUnit  # noqa: F401  (re-exported for the daemon's tests)

USER = "daemon"  # exists everywhere; uid 1, accepted with min_uid = 1


class DaemonThread:
    """A Daemon served on a Unix socket by an event loop in a thread; the test talks
    to it with plain blocking sockets."""

    def __init__(self, tmp: Path, systemd: FakeManager | None = None, **kw):
        self.dir = Path(tempfile.mkdtemp(prefix="d", dir="/tmp"))  # short: sun_path is 108 bytes
        self.path = str(self.dir / "s")
        self.systemd = systemd or FakeManager()
        cfg = config.validate({"daemon": {"min_uid": 1}, "gpu": {"quota": 4}})
        self.daemon = server.Daemon(cfg, os.getuid(), self.systemd, **kw)
        self.daemon.spawns.gpus = GpuManager(self.systemd, inventory=lambda: Inventory(True, "550", GPUS))
        self.env_dir = tmp / "env"
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        sock.listen()
        self.server = self.loop.run_until_complete(server.serve(self.daemon, sock))
        self._started.set()
        self.loop.run_forever()

    def __enter__(self):
        self.thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc):
        async def shut():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        os.unlink(self.path)
        os.rmdir(self.dir)

    def run(self, coro, timeout=30):
        """Run a coroutine on the daemon's loop (to look at its state safely)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(60)  # never reached unless the daemon hangs
        s.connect(self.path)
        return s

    def request(self, req: dict | bytes) -> dict:
        with self.connect() as s:
            s.sendall(req if isinstance(req, bytes) else json.dumps(req).encode() + b"\n")
            return json.loads(read_all(s))


def read_all(s: socket.socket) -> bytes:
    """Everything the daemon sends until it closes."""
    chunks = []
    while True:
        b = s.recv(65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


class Everyone:
    def __contains__(self, name):
        return True


def patch_users(monkeypatch, tmp: Path):
    """USER may have a server (and root's sudo and polkit check cleared everyone);
    environment files go to a temporary directory."""
    monkeypatch.setattr(users, "is_member", lambda name, group: True)
    monkeypatch.setattr(root_verdicts, "read_verdicts", lambda path: {"checked": Everyone(), "granted": {}})
    monkeypatch.setattr(units, "ENV_DIR", tmp / "env")
    monkeypatch.setattr(units, "write_env_file",
                        functools.partial(units.write_env_file, env_dir=tmp / "env"))
