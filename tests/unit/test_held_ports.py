"""The sockets that hold the hub's and the proxy's ports (appliance/held_ports.py):
the units the generator writes from appliance.toml, and how a process finds the
sockets systemd passed it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from appliance import config, held_ports


def test_the_generator_writes_both_sockets_from_the_configuration(tmp_path):
    conf = tmp_path / "appliance.toml"
    conf.write_text("[hub]\nport = 8443\nbind_address = \"::1\"\nhub_port = 18081\nproxy_api_port = 18001\n"
                    "dashboard_port = 18082\nmetrics_port = 19445\n[metrics]\naccess = \"token\"\n")
    out = tmp_path / "gen"
    out.mkdir()
    assert held_ports.generate(out, str(conf)) is None
    hub = (out / held_ports.HUB_SOCKET).read_text()
    proxy = (out / held_ports.PROXY_SOCKET).read_text()
    assert [line for line in hub.splitlines() if line.startswith("ListenStream=")] == [
        "ListenStream=127.0.0.1:18081", "ListenStream=127.0.0.1:18082"]  # no metrics port: access is "token"
    assert [line for line in proxy.splitlines() if line.startswith("ListenStream=")] == [
        "ListenStream=[::1]:8443", "ListenStream=127.0.0.1:18001"]
    # Their own service is the no-op holder, never the hub or the proxy.
    assert "Service=jupyterhub-hold@hub.service" in hub and "Service=jupyterhub-hold@proxy.service" in proxy
    assert "ReusePort=no" in hub and "IPAddressDeny=any" in hub


def test_the_public_port_without_bind_address_is_every_address():
    cfg = config.loads("")
    assert held_ports.wanted(cfg)[held_ports.PROXY_SOCKET][0] == ("", 8000)
    assert held_ports.listen_line(("", 8000)) == "8000"
    assert held_ports.same(("", 8000), ("::", 8000)) and held_ports.same(("0.0.0.0", 8000), ("", 8000))
    assert not held_ports.same(("127.0.0.1", 8000), ("", 8000))


def test_an_invalid_configuration_writes_no_socket(tmp_path):
    conf = tmp_path / "appliance.toml"
    conf.write_text("[hub]\nport = 0\n")
    out = tmp_path / "gen"
    out.mkdir()
    why = held_ports.generate(out, str(conf))
    assert why and "hub.port" in why
    assert list(out.iterdir()) == []


CHILD = """
import json, os, sys
os.environ["LISTEN_PID"] = str(os.getpid())
from appliance import held_ports
held = held_ports.check("x.socket", [("127.0.0.1", int(sys.argv[1]))])
try:
    held_ports.check("x.socket", [("127.0.0.1", 1)])
    missing = None
except held_ports.HeldPortError as e:
    missing = str(e)
print(json.dumps({"fd": held[0].fileno(), "env": "LISTEN_FDS" in os.environ, "missing": missing}))
"""


def test_a_process_takes_the_sockets_systemd_passed_and_names_a_missing_one(tmp_path):
    """The sd_listen_fds protocol as systemd follows it: fds from 3, LISTEN_FDS, and
    LISTEN_PID, which the child sets itself here (its pid is known only after fork)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]

    def as_fd_3() -> None:
        os.dup2(s.fileno(), 3)

    env = dict(os.environ, LISTEN_FDS="1", PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", CHILD, str(port)], env=env, capture_output=True, text=True,
                         preexec_fn=as_fd_3, close_fds=False, check=True)
    got = json.loads(out.stdout)
    assert got["fd"] == 3 and got["env"] is False  # LISTEN_* gone: children do not take them for theirs
    assert got["missing"].startswith("127.0.0.1:1 is not held for it by x.socket (it holds: 127.0.0.1:")
    s.close()


def test_without_its_held_ports_a_service_refuses_to_start():
    cfg = config.loads("")
    with pytest.raises(held_ports.HeldPortError, match="is not held for it by jupyterhub-proxy.socket"):
        held_ports.check(held_ports.PROXY_SOCKET, held_ports.wanted(cfg)[held_ports.PROXY_SOCKET])
