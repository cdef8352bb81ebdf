"""hub.bind_address as an IPv6 literal: "::1" (IPv6 loopback only) and "::" (every
address, both families), on the booted appliance."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.ci import in_ci


def applctl(app, args: str):
    r = app.sh(f"applctl {args}", check=False)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    return r


def answers(url: str, timeout: float = 60) -> int:
    """The HTTP status at url, waiting for something to listen there."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return requests.get(url, timeout=5).status_code
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing answers on {url} after {timeout} s") from None
            time.sleep(0.3)


def refused(url: str) -> bool:
    try:
        requests.get(url, timeout=5)
    except requests.ConnectionError:
        return True
    return False


def healthy(app) -> dict:
    status = applctl(app, "status --json")
    data = json.loads(status.stdout)
    assert status.returncode == 0, data.get("problems")
    doctor = applctl(app, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    return data


@pytest.fixture
def ipv6(appliance):
    """The container shares the host's network: it needs the host's IPv6 loopback."""
    lo = appliance.sh("ip -6 addr show dev lo", check=False).stdout
    if "inet6 ::1/128" not in lo:
        why = "this host has no IPv6 loopback (ip -6 addr show dev lo has no ::1): hub.bind_address \"::\" is untested"
        if in_ci():
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    yield appliance
    applctl(appliance, "config unset hub.bind_address")
    assert applctl(appliance, "reload").returncode == 0
    appliance.wait_hub()


def test_hub_on_ipv6_loopback_then_on_every_address(ipv6):
    app = ipv6
    v6, v4 = f"http://[::1]:{app.port}/hub/api/", f"http://127.0.0.1:{app.port}/hub/api/"

    assert applctl(app, "config set hub.bind_address ::1").returncode == 0
    out = applctl(app, "reload")
    assert out.returncode == 0, out.stderr
    assert "jupyterhub-proxy.service" in out.stdout.splitlines()[0]
    assert answers(v6) == 200
    assert refused(v4)  # bound to the IPv6 loopback only
    data = healthy(app)
    assert data["url"] == f"http://[::1]:{app.port}/"

    assert applctl(app, "config set hub.bind_address ::").returncode == 0
    out = applctl(app, "reload")
    assert out.returncode == 0, out.stderr
    assert answers(v6) == 200
    assert answers(v4) == 200  # "::" takes IPv4 too (net.ipv6.bindv6only = 0)
    data = healthy(app)
    assert data["url"].endswith(f":{app.port}/") and "[::]" not in data["url"]
