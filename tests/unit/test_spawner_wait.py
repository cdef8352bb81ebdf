"""The spawner's wait for a server to serve (ApplianceSpawner._wait_listening). Its
port is a socket systemd holds from before the server starts, so the kernel accepts
connections at once: only an HTTP answer may end the wait, and a unit that ended
must fail the spawn at once, not after JupyterHub's 60 s http_timeout."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from appliance.hub.spawner import ApplianceSpawner


class Waiting(ApplianceSpawner):
    server = SimpleNamespace(base_url="/user/alice/")
    states: list = []

    async def poll(self):
        return self.states.pop(0) if self.states else None


def spawner(port: int, states: list) -> Waiting:
    user = SimpleNamespace(name="alice", id=7, url="/user/alice/", server=None, admin=False)
    s = Waiting(user=user, config=Config(), hub=SimpleNamespace(api_url="http://127.0.0.1:8081/hub/api"))
    s.ip, s.port, s.states, s.http_timeout = "127.0.0.1", port, list(states), 20
    return s


@pytest.fixture
def held():
    """A listening socket nobody accepts on yet, as systemd holds a server's port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def test_a_server_that_dies_before_it_serves_fails_the_spawn_at_once(held):
    from jupyterhub.spawner import SpawnException
    s = spawner(held.getsockname()[1], [None, 3])  # running, then ended
    started = time.monotonic()
    with pytest.raises(SpawnException, match="Your server stopped while starting"):
        asyncio.run(s._wait_listening())
    assert time.monotonic() - started < 5


def test_the_wait_ends_when_the_server_answers_its_first_request(held):
    seen = []

    def serve_later():
        time.sleep(1.5)  # JupyterLab still importing: requests wait in the backlog
        held.settimeout(10)
        while True:  # then it serves every connection, as a server does
            try:
                conn, _ = held.accept()
            except OSError:
                return
            with conn:
                seen.append(conn.recv(1024))
                try:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass  # a request the spawner gave up on

    threading.Thread(target=serve_later, daemon=True).start()
    s = spawner(held.getsockname()[1], [])
    started = time.monotonic()
    asyncio.run(s._wait_listening())
    assert 1.4 < time.monotonic() - started < 5
    assert seen and seen[0].startswith(b"GET /user/alice/api HTTP/1.1")
