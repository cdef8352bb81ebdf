"""Web apps beside JupyterLab ([apps.NAME], docs/apps.md): TensorBoard from PyPI in a
system environment of its own, declared in appliance.toml, opened by its owner at
/user/NAME/tensorboard/ through the proxy and from JupyterLab's launcher in chromium;
another user reaches nothing of it, neither through the proxy with their own login
nor as a local account (its unix socket, any TCP port); an app whose program is
missing is left off with one line in the server's log; `applctl apps list|check`.

TensorBoard's wheels are downloaded on the host once (pip, from PyPI; cached in
/var/cache/jupyterhub-appliance-test) and installed in the container without a
network: pip inside the container lacks the host's CA bundle (TESTING.md).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from browser import Browser

pytest.register_assert_rewrite("real_browser")
from playwright.sync_api import expect  # noqa: E402

pytest_plugins = ["real_browser"]  # the chromium and page fixtures, the screenshot on failure

WHEELS = Path("/var/cache/jupyterhub-appliance-test/wheels-tensorboard")
TB = "/opt/apps/tensorboard"
OWNER, OTHER = ("tessa", "tb-owner-7"), ("otto", "not-tessa-8")
APPS = f"""
[apps.tensorboard]
command = ["{TB}/bin/tensorboard", "--logdir", "tensorboard-logs", "--load_fast", "false",
           "--host", "127.0.0.1", "--port", "{{port}}"]
title = "TensorBoard"
timeout = 90

[apps.sockapp]
command = ["/opt/apps/sockapp/serve", "{{unix_socket}}", "{{base_url}}"]
title = "Socket app"

[apps.notinstalled]
command = ["/opt/apps/nothing/bin/nothing", "--socket", "{{unix_socket}}"]
title = "Not installed"
"""

# An app that listens on {unix_socket} itself, as code-server does: it says whose it
# is and what {base_url} was.
SOCKAPP = """#!/usr/bin/python3
import os, socketserver, sys
from http.server import BaseHTTPRequestHandler

class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"sockapp of uid {os.getuid()} at {self.path} under {sys.argv[2]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self):
        return "unix"

socketserver.UnixStreamServer(sys.argv[1], Hello).serve_forever()
"""


def wheels_for(python: str) -> Path:
    """TensorBoard and what it needs, as wheels for the container's Python (X.Y)."""
    where = WHEELS / python
    if not any(where.glob("tensorboard-*.whl")) or not any(where.glob("pip-*.whl")):
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run([shutil.which("pip") or "pip", "download", "-q", "--only-binary=:all:",
                        "--python-version", python, "--implementation", "cp",
                        *(f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                                                      "manylinux2014_x86_64", "any")),
                        "-d", str(where), "tensorboard", "pip"], check=True, timeout=600)
    return where


@pytest.fixture(scope="module")
def apps(appliance):
    app = appliance
    python = app.sh("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'").stdout.strip()
    wheels = list(wheels_for(python).glob("*.whl"))
    for wheel in wheels:
        app.ct.copy_in(wheel, f"/root/tb-wheels/{wheel.name}")
    pip = next(w.name for w in wheels if w.name.startswith("pip-"))
    # A system environment of its own, made by the system's python3, and pip run
    # from its wheel (Debian's python3 has no ensurepip without python3-venv).
    app.sh(f"python3 -m venv --without-pip {TB} && {TB}/bin/python /root/tb-wheels/{pip}/pip install -q "
           "--no-index --find-links /root/tb-wheels tensorboard")
    app.ct.write("/opt/apps/sockapp/serve", SOCKAPP, mode=0o755)
    for name, password in (OWNER, OTHER):
        app.sh(f"useradd -m {name} && echo {name}:{password} | chpasswd && applctl adduser {name} >/dev/null")
    # The owner's own log directory, with one run in it (TensorBoard's own writer).
    app.sh(f"cd && {TB}/bin/python -c \"from tensorboard.summary.writer.event_file_writer import EventFileWriter; "
           "w = EventFileWriter('tensorboard-logs/tessa-run'); w.flush(); w.close()\"", user=OWNER[0])
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text(APPS))
    app.sh("applctl reload >/dev/null")
    app.wait_hub()
    # Without a GPU: earlier modules may leave fake GPUs behind, and the spawn form.
    owner = Browser(app.url)
    owner.login_and_start(*OWNER)
    owner.wait_for_server(OWNER[0])
    yield app, owner
    app.sh(f"applctl stop {OWNER[0]} {OTHER[0]} >/dev/null", check=False)
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text())
    app.sh("applctl reload >/dev/null", check=False)


def test_the_owner_opens_tensorboard_through_the_proxy_and_it_reads_their_logs(apps):
    app, owner = apps
    name = OWNER[0]
    page = owner.get(f"/user/{name}/tensorboard/", timeout=120)
    assert page.status_code == 200 and "<title>TensorBoard</title>" in page.text, (page.status_code, page.text[:300])
    runs = owner.get(f"/user/{name}/tensorboard/data/runs")
    assert runs.status_code == 200 and "tessa-run" in runs.json(), runs.text[:300]
    # The launcher's entries: TensorBoard, not the app whose program is missing.
    info = owner.get(f"/user/{name}/server-proxy/servers-info")
    assert info.status_code == 200, info.text[:300]
    titles = {s["name"]: s["launcher_entry"]["title"] for s in info.json()["server_processes"]}
    assert titles == {"tensorboard": "TensorBoard", "sockapp": "Socket app"}


def test_an_app_on_its_own_unix_socket_is_served_with_the_base_url_filled_in(apps):
    app, owner = apps
    name = OWNER[0]
    uid = app.sh(f"id -u {name}").stdout.strip()
    page = owner.get(f"/user/{name}/sockapp/some/path")
    assert page.status_code == 200, page.text[:300]
    assert page.text == f"sockapp of uid {uid} at /some/path under /user/{name}/"


def test_a_missing_program_leaves_the_app_off_with_one_line_in_the_servers_log(apps):
    app, _ = apps
    log = app.sh(f"journalctl -u jupyter-{OWNER[0]}.service --no-pager -o cat").stdout
    lines = [line for line in log.splitlines() if "notinstalled" in line]
    assert len(lines) == 1, lines
    assert "app notinstalled left off: its program /opt/apps/nothing/bin/nothing is not installed" in lines[0]


def test_another_user_reaches_nothing_of_it(apps):
    app, owner = apps
    name = OWNER[0]
    # Through the proxy, logged in as themselves: refused, never TensorBoard's page.
    other = Browser(app.url)
    other.login_and_start(*OTHER)
    theirs = other.get(f"/user/{name}/tensorboard/", timeout=120)
    assert "<title>TensorBoard</title>" not in theirs.text
    assert theirs.status_code in (403, 404) or "/hub/login" in theirs.url or f"/user/{OTHER[0]}/" in theirs.url, \
        (theirs.status_code, theirs.url)
    # As a local account: the app's unix socket is in the server's private /tmp, in a
    # 0700 directory; connecting to it is refused.
    sockets = app.sh(f"find /tmp/systemd-private-*-jupyter-{name}.service-*/tmp -type s").stdout.split()
    assert sockets, "TensorBoard's unix socket was not found"
    probe = ("import socket, sys\nfor p in sys.argv[1:]:\n    s = socket.socket(socket.AF_UNIX)\n"
             "    try:\n        s.connect(p); print('connected', p)\n"
             "    except OSError as e:\n        print('refused', p, e.errno)\n")
    out = app.sh(f"python3 -c {shlex.quote(probe)} {' '.join(sockets)}", user=OTHER[0]).stdout
    assert "connected" not in out and "refused" in out, out
    # ...and no TCP port of the machine leads to it: TensorBoard listens only in its
    # own network namespace (port 80 there), nothing of it on the machine's.
    listening = app.sh("ss -Hltnp").stdout
    assert "tensorboard" not in listening, listening
    assert not re.search(r"127\.0\.0\.1:80\s", listening), listening
    tcp = app.sh("python3 -c \"import socket; socket.create_connection(('127.0.0.1', 80), timeout=5)\"",
                 user=OTHER[0], check=False)
    assert tcp.returncode != 0 and "ConnectionRefusedError" in tcp.stderr, tcp.stderr
    # The owner's own page still works after all that.
    assert owner.get(f"/user/{name}/tensorboard/").status_code == 200


def test_applctl_apps_list_and_check(apps):
    app, _ = apps
    listed = {r["name"]: r for r in json.loads(app.sh("applctl apps list --json").stdout)}
    assert listed["tensorboard"]["installed"] is True and listed["tensorboard"]["listens_on"] == "port"
    assert listed["notinstalled"]["installed"] is False
    ok = app.sh("applctl apps check tensorboard", check=False)
    assert ok.returncode == 0 and re.fullmatch(r"tensorboard: ok: answered HTTP/1\.\d 200 .*\n", ok.stdout), \
        (ok.stdout, ok.stderr)
    every = app.sh("applctl apps check", check=False)
    assert every.returncode == 1
    assert re.search(r"^sockapp: ok: answered HTTP/1\.\d 200 ", every.stdout, re.M), every.stdout
    assert "notinstalled: FAIL: its program /opt/apps/nothing/bin/nothing is not installed" in every.stdout
    bad = app.sh("applctl apps check no-such-app", check=False)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr == "applctl: there is no app 'no-such-app' in [apps]: tensorboard, sockapp, notinstalled\n"


def test_the_launcher_entry_opens_tensorboard_in_a_browser(apps, page):
    app, _ = apps
    name, password = OWNER
    page.goto(app.url + "/hub/login")
    page.locator("#username_input").fill(name)
    page.locator("#password_input").fill(password)
    page.locator("#login_submit").click()
    page.goto(f"{app.url}/user/{name}/lab")
    card = page.locator(".jp-Launcher .jp-LauncherCard", has_text="TensorBoard")
    expect(card).to_be_visible()
    with page.context.expect_page() as opened:
        card.click()
    tab = opened.value
    tab.wait_for_load_state()
    expect(tab).to_have_url(re.compile(rf"/user/{name}/tensorboard/"))
    expect(tab).to_have_title("TensorBoard")
