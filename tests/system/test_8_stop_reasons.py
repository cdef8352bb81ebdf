"""The idle culler's settings and the reason for every stop a person did not ask
for, on the booted appliance: idle, max age, an administrator, a crash; shown on
their home page, by applctl servers, and in the journal as APPLIANCE_STOP_REASON.
(Out of memory needs a real kernel's memory controller: tests/unit and the VM tier.)
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from browser import Browser

PASSWORD = "stop-pass-1"
NAMES = ["cull1", "age1", "adm1", "crash1", "boss1"]
# The lowest values appliance.toml takes: max_age 60 s (not 90) is still past cull1's
# idle stop, which comes within TIMEOUT + EVERY of its start plus its start-up time.
TIMEOUT, EVERY, MAX_AGE = 30, 10, 60


def running(app, name: str) -> bool:
    return app.sh(f"systemctl is-active jupyter-{name}.service", check=False).stdout.strip() == "active"


def wait_stopped(app, name: str, within: float) -> float:
    t0 = time.monotonic()
    while running(app, name):
        assert time.monotonic() - t0 < within, f"{name}'s server still runs after {within} s"
        time.sleep(1)
    return time.monotonic() - t0


def home_says(b: Browser, text: str, timeout: float = 90) -> str:
    """The home page's stop message, once the hub has noticed the stop."""
    deadline = time.monotonic() + timeout
    while True:
        page = b.get("/hub/home").text
        if text in page:
            return page
        assert time.monotonic() < deadline, f"the home page never said {text!r}:\n{page[-1500:]}"
        time.sleep(2)


@pytest.fixture(scope="module")
def reasons(appliance):
    app = appliance
    app.sh("".join(f"id {n} >/dev/null 2>&1 || useradd -m {n}; echo {n}:{PASSWORD} | chpasswd; "
                   f"applctl adduser {n} >/dev/null 2>&1 || true\n" for n in NAMES))
    app.sh("applctl admin add boss1 >/dev/null")
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text(
        f"[culler]\ntimeout = {TIMEOUT}\nevery = {EVERY}\nmax_age = {MAX_AGE}\ncull_admin_users = false\n"))
    app.sh("applctl reload")
    app.wait_hub()
    browsers = {name: Browser(app.url) for name in NAMES}

    def start(name: str) -> None:
        browsers[name].login_and_start(name, PASSWORD)
        browsers[name].wait_for_server(name)

    # All but cull1 at once (age1's maximum age counts from here); cull1 on its own
    # afterwards, so that its idle stop comes well before its own maximum age.
    with ThreadPoolExecutor(len(NAMES) - 1) as pool:
        list(pool.map(start, [n for n in NAMES if n != "cull1"]))
    start("cull1")
    yield app, browsers
    app.sh("applctl stop --all >/dev/null", check=False)
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text())
    app.sh("applctl reload", check=False)


def test_why_servers_stopped_is_told_to_their_owners_and_administrators(reasons):
    app, b = reasons
    t0 = time.monotonic()
    active = threading.Event()

    def keep_age1_active():  # through the proxy, as a browser's traffic would be
        while not active.is_set():
            b["age1"].get("/user/age1/api/status")
            active.wait(3)

    threading.Thread(target=keep_age1_active, daemon=True).start()
    app.sh("applctl stop adm1")
    app.sh("systemctl kill -s KILL jupyter-crash1.service")

    # Idle: stopped within `every` + 60 s of crossing its timeout (plus the start-up slack here).
    took = wait_stopped(app, "cull1", TIMEOUT + EVERY + 60 + 30)
    home_says(b["cull1"], f"because it was idle for {TIMEOUT} seconds.")
    assert running(app, "boss1")  # cull_admin_users = false: an admin's idle server stays
    # Max age stops an active server.
    wait_stopped(app, "age1", MAX_AGE + EVERY + 60 + 30 - (time.monotonic() - t0 - took))
    active.set()
    home_says(b["age1"], f"because it reached the maximum age of {MAX_AGE} seconds.")
    home_says(b["adm1"], "because an administrator stopped it")
    home_says(b["crash1"], "because it crashed (signal 9).")
    assert running(app, "boss1")

    out = app.sh("applctl servers").stdout
    assert "Stopped without being asked (the last time):" in out
    for name, reason in (("cull1", "idle"), ("age1", "max-age"), ("adm1", "admin"), ("crash1", "crashed")):
        assert any(line.split()[:1] == [name] and f" {reason} " in line for line in out.splitlines()), out
    rows = {r["user"]: r for r in json.loads(app.sh("applctl servers --json").stdout)}
    assert "crash1" not in rows and rows["boss1"]["last_stop"] is None  # running servers only
    journal = app.sh("journalctl APPLIANCE_STOP_REASON=idle -o json --no-pager").stdout
    assert any(json.loads(line).get("APPLIANCE_USER") == "cull1" for line in journal.splitlines())

    # A new start: the old reason is no news any more.
    again = Browser(app.url)  # b["cull1"] is still logged in: the login form would not show
    again.login_and_start("cull1", PASSWORD)
    again.wait_for_server("cull1")
    assert "appliance-stop-reason" not in again.get("/hub/home").text


def test_a_server_that_dies_while_starting_fails_its_spawn_at_once(reasons):
    """A person's own Jupyter config that ends the server: the spawn fails as soon as
    the unit has ended, with why and where to look, not after JupyterHub's 60 s
    http_timeout with "didn't respond"."""
    app, _ = reasons
    app.sh(f"id break1 >/dev/null 2>&1 || useradd -m break1; echo break1:{PASSWORD} | chpasswd; "
           "applctl adduser break1 >/dev/null")
    app.sh("runuser -u break1 -- sh -c 'mkdir -p ~/.jupyter && "
           "printf \"import os\\nos._exit(3)\\n\" > ~/.jupyter/jupyter_server_config.py'")
    b = Browser(app.url)
    b.login_and_start("break1", PASSWORD)
    ready, messages = b.spawn_outcome("break1", timeout=45)
    assert not ready, messages
    assert ("Your server stopped while starting: it crashed (exit code 3). An administrator can see why with: "
            "sudo applctl logs --user break1") in messages[-1], messages
    home_says(b, "because it crashed (exit code 3).")
    assert not running(app, "break1")
    # Fixed, the next start works.
    app.sh("rm /home/break1/.jupyter/jupyter_server_config.py")
    again = Browser(app.url)  # b is still logged in: the login form would not show
    again.login_and_start("break1", PASSWORD)
    again.wait_for_server("break1")
