"""The administrator's and the user's journey on a booted Debian 12 with the .deb.

Tests in this file share one container and run in order: later ones build on the
servers earlier ones started, as a day on a real machine would.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from urllib.parse import urljoin, urlparse

import requests
from booted import TOP, USERS, free_port
from browser import Browser, login
from holds import held_start


def test_hub_runs_unprivileged_and_sandboxed(appliance):
    props = appliance.unit_props("jupyterhub.service", "MainPID", "User", "NoNewPrivileges")
    assert props["User"] == "jupyterhub"
    assert props["NoNewPrivileges"] == "yes"
    uid = appliance.sh(f"ps -o uid= -p {props['MainPID']}").stdout.strip()
    assert uid not in ("", "0")
    assert uid == appliance.sh("id -u jupyterhub").stdout.strip()
    # The proxy is its own unit, not a child of the hub.
    assert appliance.unit_props("jupyterhub-proxy.service", "ActiveState")["ActiveState"] == "active"
    state = appliance.sh("stat -c '%U %a' /var/lib/jupyterhub /var/lib/jupyterhub/jupyterhub_cookie_secret "
                         "/var/lib/jupyterhub-appliance/secrets /var/lib/jupyterhub-appliance/secrets/proxy_token"
                         ).stdout.split("\n")
    assert state[:4] == ["jupyterhub 700", "jupyterhub 600", "root 700", "root 600"]


def test_user_not_added_is_refused_plainly(appliance):
    r = Browser(appliance.url).login("alice", USERS["alice"])
    assert r.status_code == 403
    assert "alice has not been given access" in r.text
    assert "applctl adduser alice" in r.text
    assert appliance.sh("systemctl is-active jupyter-alice.service", check=False).stdout.strip() != "active"


def test_adduser_then_alice_lands_in_jupyterlab_and_runs_code(appliance):
    out = appliance.sh("applctl adduser alice").stdout
    assert "alice can now log in" in out
    b = login(appliance, "alice", USERS["alice"])
    page = b.wait_for_server("alice")
    # JupyterHub may add ?redirects=1 when the route is seconds old: the page is what counts.
    assert urlparse(page.url).path == "/user/alice/lab"
    status = b.api_status("alice")
    assert status.status_code == 200 and "started" in status.json()
    kernel = b.start_kernel("alice")
    out = b.execute("alice", kernel, "import os, pwd; print(pwd.getpwuid(os.getuid()).pw_name, 6 * 7)")
    assert out.strip() == "alice 42"


def test_alice_unit_runs_as_alice_closed_and_keeps_its_secret(appliance):
    p = appliance.unit_props("jupyter-alice.service", "User", "DevicePolicy", "NoNewPrivileges", "PrivateTmp",
                             "Slice", "Environment", "ActiveState", "MainPID")
    assert p["ActiveState"] == "active"
    assert (p["User"], p["DevicePolicy"], p["NoNewPrivileges"], p["PrivateTmp"], p["Slice"]) == \
        ("alice", "closed", "yes", "yes", "jupyter-users.slice")
    assert appliance.sh(f"ps -o user= -p {p['MainPID']}").stdout.strip() == "alice"
    # The API token is in the server's environment, not in what every user can read.
    shown = appliance.sh("systemctl show jupyter-alice.service", user="bob").stdout
    assert "JUPYTERHUB_API_TOKEN" not in shown and "TOKEN" not in p["Environment"]
    environ = appliance.sh(f"tr '\\0' '\\n' < /proc/{p['MainPID']}/environ").stdout
    assert re.search(r"^JUPYTERHUB_API_TOKEN=\S+", environ, re.M)
    # The environment file was read at start and is gone.
    assert appliance.sh("ls -A /run/jupyterhub-appliance/env").stdout.strip() == ""


def test_wrong_password_is_refused(appliance):
    r = Browser(appliance.url).login("alice", "not-her-password")
    assert r.status_code == 403
    assert "Invalid username or password" in r.text


def test_logout_and_back_finds_server_and_files(appliance):
    b = login(appliance, "alice", USERS["alice"])
    b.wait_for_server("alice")
    kernel = b.start_kernel("alice")
    assert b.execute("alice", kernel, "open('notes.txt', 'w').write('kept'); print('ok')").strip() == "ok"
    before = appliance.unit_props("jupyter-alice.service", "InvocationID")["InvocationID"]
    b.get("/hub/logout")
    assert "/hub/login" in b.get("/hub/home").url  # logged out of the hub
    b = login(appliance, "alice", USERS["alice"])
    b.wait_for_server("alice")
    assert appliance.unit_props("jupyter-alice.service", "InvocationID")["InvocationID"] == before
    kernel = b.start_kernel("alice")
    assert b.execute("alice", kernel, "print(open('notes.txt').read())").strip() == "kept"


def static_files_of(b: Browser, page: requests.Response) -> dict[str, int]:
    """Each static file a page loads (its <script src>, <link href>, the modules
    requirejs is told to load, what its CSS imports and names): URL -> status."""
    base = page.url
    refs = set(re.findall(r"""(?:src|href)=["']([^"']*/static/[^"']+)["']""", page.text))
    # page.html's require.config: baseUrl is static/js, paths relative to it.
    js_base = re.search(r"""baseUrl:\s*['"]([^'"]+)['"]""", page.text)
    if js_base:
        for path in re.findall(r"""['"](\.\./components/[^'"]+)['"]""", page.text):
            if "js-sha256" in path:  # named by page.html, but in no JupyterHub package; nothing loads it
                continue
            refs.add(urljoin(urljoin(base, js_base.group(1).rstrip("/") + "/"), path + ".js"))
    seen: dict[str, int] = {}
    todo = [urljoin(base, r) for r in refs]
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        r = b.s.get(url, timeout=30)
        seen[url] = r.status_code
        if url.split("?")[0].endswith(".css") and r.ok:
            for ref in re.findall(r"""(?:url\(\s*['"]?|@import\s*['"])([^'")?#]+)""", r.text):
                if not ref.startswith(("data:", "http")):
                    todo.append(urljoin(url, ref))
    return seen


def test_every_static_file_of_the_hubs_pages_and_jupyterlab_loads(appliance):
    """The package leaves out what the appliance never reads (test_package_contents):
    what the hub's pages and JupyterLab do load is all there."""
    b = login(appliance, "alice", USERS["alice"])
    lab = b.wait_for_server("alice")
    pages = [b.get("/hub/home"), b.get("/hub/token"), lab, Browser(appliance.url).get("/hub/login")]
    loaded: dict[str, int] = {}
    for page in pages:
        assert page.status_code == 200, page.url
        loaded |= static_files_of(b, page)
    assert [u for u in loaded if "/hub/static/components/" in u], loaded
    assert [u for u in loaded if "/user/alice/static/lab/" in u or "/static/lab/" in u], loaded
    assert [u for u in loaded if "webfonts" in u], loaded  # Font Awesome's, named by the CSS
    failed = {u: code for u, code in loaded.items() if code != 200}
    assert not failed, failed


def test_spawn_progress_messages_on_pending_page(appliance):
    appliance.sh("applctl adduser carol")
    b = Browser(appliance.url)
    page = b.get("/hub/login")
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text).group(1)
    r = b.s.post(appliance.url + "/hub/login?next=", data={"_xsrf": xsrf, "username": "carol",
                 "password": USERS["carol"]}, allow_redirects=False, timeout=60)
    assert r.status_code == 302
    # The start is held until the unit's message is read (holds.py): a fast server
    # is ready before a stream joins, and then the stream replays only "ready".
    with held_start(appliance, "carol") as release:
        spawn = threading.Thread(target=lambda: b.get("/hub/spawn", timeout=120))
        spawn.start()
        seen = b.progress_until("carol", "jupyter-carol.service", timeout=60)
        release()
    spawn.join(120)
    assert any("jupyter-carol.service" in m for m in seen), seen
    hub_xsrf = b.s.cookies.get("_xsrf", path="/hub/")
    with b.s.get(appliance.url + "/hub/api/users/carol/server/progress", stream=True, timeout=60,
                 headers={"X-XSRFToken": hub_xsrf, "Accept": "text/event-stream"}) as stream:
        assert stream.status_code == 200
        events = [json.loads(line[5:]) for line in stream.iter_lines(decode_unicode=True)
                  if line and line.startswith("data:")]
    assert events[-1].get("ready") is True


def test_restart_hub_keeps_server_and_open_connection(appliance):
    b = login(appliance, "alice", USERS["alice"])
    b.wait_for_server("alice")
    kernel = b.start_kernel("alice")
    before = appliance.unit_props("jupyter-alice.service", "InvocationID")["InvocationID"]
    hub_pid = appliance.unit_props("jupyterhub.service", "MainPID")["MainPID"]

    async def across_restart() -> tuple[str, str]:
        async with await b.kernel_socket("alice", kernel) as k:
            first = await k.execute("x = 41; print('before')")
            await asyncio.to_thread(appliance.sh, "systemctl restart jupyterhub")
            # The same websocket, still open: it never went through the hub.
            return first, await k.execute("print(x + 1)")

    first, second = asyncio.run(across_restart())
    assert (first.strip(), second.strip()) == ("before", "42")
    assert appliance.unit_props("jupyterhub.service", "MainPID")["MainPID"] != hub_pid
    assert appliance.unit_props("jupyter-alice.service", "InvocationID")["InvocationID"] == before
    appliance.wait_hub()
    assert b.api_status("alice").status_code == 200
    # The hub still knows the server is running (it polled the daemon at start).
    r = b.get("/hub/api/user", headers={"X-XSRFToken": b.s.cookies.get("_xsrf", path="/hub/")})
    assert r.status_code == 200 and r.json()["servers"][""]["ready"] is True


def test_a_proxy_restart_misses_no_request_to_a_running_server(appliance):
    """The proxy starts with the routes it had (route_store.js), on ports systemd
    held for it: a request made while it restarts waits, then reaches the server."""
    b = login(appliance, "alice", USERS["alice"])
    b.wait_for_server("alice")
    answers: list[tuple[float, float, object]] = []
    done = threading.Event()

    def ask() -> None:
        while not done.is_set():
            start = time.monotonic()
            try:
                r = b.api_status("alice")  # no redirects: one to the hub is a miss
                got: object = r.status_code if "json" in r.headers.get("Content-Type", "") else r.url
            except requests.RequestException as e:
                got = repr(e)
            answers.append((start, time.monotonic(), got))
            time.sleep(0.1)

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        time.sleep(0.5)
        before = appliance.unit_props("jupyterhub-proxy.service", "MainPID")["MainPID"]
        appliance.sh("systemctl restart jupyterhub-proxy")
        time.sleep(1.5)
    finally:
        done.set()
        asker.join()
    assert appliance.unit_props("jupyterhub-proxy.service", "MainPID")["MainPID"] != before
    missed = [a for a in answers if a[2] != 200]
    assert not missed and len(answers) > 10, f"{len(missed)} of {len(answers)} missed: {missed[:5]}"
    print(f"longest answer across the proxy restart: {max(end - start for start, end, _ in answers):.2f} s")


def test_the_proxys_routes_file_is_its_own_and_keeps_no_deleted_route(appliance):
    # (With DynamicUser=, a link into /run/private/, mode 0700, root's.)
    assert appliance.sh("stat -L -c '%a' /run/jupyterhub-proxy /run/jupyterhub-proxy/routes.json").stdout.split() \
        == ["700", "600"]
    assert appliance.sh("cat /run/jupyterhub-proxy/routes.json", user="alice", check=False).returncode != 0
    token = appliance.sh("cat /var/lib/jupyterhub-appliance/secrets/proxy_token").stdout.strip()
    api = f"http://127.0.0.1:{appliance.proxy_api_port}/api/routes"
    auth = {"Authorization": f"token {token}"}
    # As the hub adds and deletes a route: a restart brings back only what is there.
    route = {"target": "http://127.0.0.1:9", "jupyterhub": True, "user": "nobody-here"}
    assert requests.post(api + "/user/nobody-here", headers=auth, json=route, timeout=10).status_code == 201
    assert requests.delete(api + "/user/nobody-here", headers=auth, timeout=10).status_code == 204
    appliance.sh("systemctl restart jupyterhub-proxy")
    routes = requests.get(api, headers=auth, timeout=10).json()
    assert "/user/nobody-here" not in routes and "/user/alice" in {k.rstrip("/") for k in routes}, routes


SLOW_SERVER = """
import http.server, sys, time
class Slow(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(2)
        self.send_response(200)
        self.send_header("Content-Length", "14")
        self.end_headers()
        self.wfile.write(b"slow and whole")
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Slow).serve_forever()
"""


def test_a_stopping_proxy_answers_the_requests_it_has_begun(appliance):
    """graceful_stop.js: a request the proxy is passing on when it is told to stop
    gets its whole answer (CHP alone exits at once and drops it)."""
    port = free_port()
    appliance.ct.write("/root/slow.py", SLOW_SERVER)
    appliance.sh(f"systemd-run --unit slow-server python3 /root/slow.py {port}")
    appliance.sh(f"for i in $(seq 100); do bash -c '</dev/tcp/127.0.0.1/{port}' 2>/dev/null && exit; sleep 0.1; done; "
                 "exit 1")  # listening
    token = appliance.sh("cat /var/lib/jupyterhub-appliance/secrets/proxy_token").stdout.strip()
    api = f"http://127.0.0.1:{appliance.proxy_api_port}/api/routes/slow"
    auth = {"Authorization": f"token {token}"}
    appliance.sh("systemctl stop jupyterhub")  # its route check would delete the route
    try:
        assert requests.post(api, headers=auth, json={"target": f"http://127.0.0.1:{port}"}, timeout=10).status_code \
            == 201
        answer: list[object] = []
        asker = threading.Thread(target=lambda: answer.append(requests.get(appliance.url + "/slow", timeout=30)))
        asker.start()
        time.sleep(1)  # the proxy has passed it on; the slow server answers in 2 s
        appliance.sh("systemctl restart jupyterhub-proxy")
        asker.join()
        assert answer[0].status_code == 200 and answer[0].text == "slow and whole", answer
        requests.delete(api, headers=auth, timeout=10)
    finally:
        appliance.sh("systemctl stop slow-server; systemctl start jupyterhub", check=False)
        appliance.wait_hub()


def test_daemon_refuses_other_uids_and_root(appliance):
    # A local user in the socket's group but not the hub: SO_PEERCRED decides.
    appliance.sh("useradd --create-home mallory && usermod -aG jupyterhub mallory")
    reply = json.loads(appliance.daemon_request('{"op": "spawn", "user": "alice"}', user="mallory").stdout)
    assert reply["ok"] is False and reply["error"]["code"] == "forbidden"
    # Anyone else cannot even connect.
    out = appliance.daemon_request('{"op": "status", "user": "alice"}', user="bob")
    assert out.returncode != 0 and "Permission denied" in out.stderr
    # The hub may not start a server for root.
    reply = json.loads(appliance.daemon_request('{"op": "spawn", "user": "root"}', user="jupyterhub").stdout)
    assert reply["ok"] is False and reply["error"]["code"] == "invalid_user", reply
    # Nor one for a user not in jupyterhub-users, nor smuggle properties in.
    reply = json.loads(appliance.daemon_request('{"op": "spawn", "user": "bob"}', user="jupyterhub").stdout)
    assert reply["error"]["code"] == "invalid_user" and "jupyterhub-users" in reply["error"]["message"]
    reply = json.loads(appliance.daemon_request(
        '{"op": "spawn", "user": "alice", "extra": {"User": "root"}}', user="jupyterhub").stdout)
    assert reply["error"]["field"] == "extra"
    reply = json.loads(appliance.daemon_request('{"op": "reboot"}', user="jupyterhub").stdout)
    assert reply["error"]["field"] == "op"
    logs = appliance.sh("journalctl -u jupyterhub-appliance.service --no-pager").stdout
    assert "refused request from uid" in logs


def test_security_exposure(appliance):
    scores = {}
    for unit in ("jupyterhub.service", "jupyterhub-proxy.service", "jupyterhub-appliance.service",
                 "jupyterhub-pam.service"):
        out = appliance.sh(f"systemd-analyze security --no-pager {unit}").stdout
        scores[unit] = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    print("exposure:", scores)
    # No worse than 0.2.0 (1.2, 1.4 and 1.2).
    assert scores["jupyterhub.service"] <= 1.2, scores
    assert scores["jupyterhub-proxy.service"] <= 1.4, scores
    assert scores["jupyterhub-appliance.service"] <= 1.2, scores
    # Root (for /etc/shadow and pam_faillock's tallies), but without capabilities.
    assert scores["jupyterhub-pam.service"] <= 1.2, scores


def test_without_nvml_the_appliance_runs_cpu_only_and_says_so(appliance):
    reply = json.loads(appliance.daemon_request('{"op": "gpus"}').stdout)
    assert reply["ok"] and reply["available"] is False and "CPU-only" in reply["reason"]
    # Said once per daemon start, not on every request.
    run = appliance.unit_props("jupyterhub-appliance.service", "InvocationID")["InvocationID"]
    logs = appliance.sh(f"journalctl _SYSTEMD_INVOCATION_ID={run} --no-pager").stdout
    assert logs.count("running CPU-only") == 1
    # alice's server got no NVIDIA device and an empty CUDA_VISIBLE_DEVICES.
    pid = appliance.unit_props("jupyter-alice.service", "MainPID")["MainPID"]
    environ = appliance.sh(f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout
    assert "CUDA_VISIBLE_DEVICES=\n" in environ + "\n"
    assert "nvidia" not in appliance.unit_props("jupyter-alice.service", "DeviceAllow")["DeviceAllow"]
    # scripts/real-gpu-check, for hosts with a real GPU, says there is none here and changes nothing.
    for name in ("real-gpu-check", "real_gpu_check.py"):
        appliance.ct.copy_in(TOP / "scripts" / name, f"/root/rgc/scripts/{name}")
    r = appliance.sh("/root/rgc/scripts/real-gpu-check --user alice", check=False)
    assert r.returncode == 2 and "no usable NVIDIA GPU here" in r.stdout and "CPU-only" in r.stdout, r


def test_no_environment_compiles_the_unused_iri_grammar_at_start(appliance):
    """rfc3987_syntax builds ~35 Lark parsers when imported: 1.3-1.8 s of every hub
    and server start, for a format no Jupyter schema uses (issue 16)."""
    lib = "/usr/lib/jupyterhub-appliance"
    for env, module in (("user", "jupyter_server.serverapp"), ("user", "jupyterhub.singleuser"),
                        ("hub", "jupyterhub.app")):
        out = appliance.sh(f"{lib}/{env}/bin/python -c 'import sys, {module}; "
                           "print(sorted(m for m in sys.modules if m.split(\".\")[0] in (\"rfc3987_syntax\", \"lark\")))'")
        assert out.stdout.strip() == "[]", (env, module, out.stdout)


def test_a_server_start_runs_no_node(appliance):
    """JupyterLab's labapp runs `node yarn.js config --json` when imported: 0.55 s of
    CPU per start for an npm registry no server uses (issue 16). A `node` first on
    PATH records each run; plain Python runs it (so the probe works), the
    launcher's start does not."""
    lib = "/usr/lib/jupyterhub-appliance"
    appliance.sh("mkdir -p /tmp/fakenode && printf '#!/bin/sh\\necho \"$*\" >> /tmp/fakenode/ran\\n' "
                 "> /tmp/fakenode/node && chmod 755 /tmp/fakenode/node && rm -f /tmp/fakenode/ran")
    start = ("import runpy, sys; launcher = runpy.run_path('%s/user/bin/appliance-singleuser'); "
             "sys.argv[1:] and launcher['without_yarn_config'](); import jupyterlab.labapp" % lib)
    for as_launcher in ("", " launcher"):
        appliance.sh(f"rm -f /tmp/fakenode/ran; cd /tmp && PATH=/tmp/fakenode:$PATH "
                     f"{lib}/user/bin/python -c \"{start}\"{as_launcher}")
        ran = appliance.sh("cat /tmp/fakenode/ran 2>/dev/null || true").stdout
        if as_launcher:
            assert ran == "", ran
        else:
            assert "config --json" in ran, ran


def hub_asks(appliance, op: str, name: str) -> dict:
    return json.loads(appliance.daemon_request(json.dumps({"op": op, "user": name}), user="jupyterhub").stdout)


def test_daemon_refuses_members_below_min_uid(appliance):
    """Last in this file: it restarts the daemon (applctl reload)."""
    free = [u for u in range(999, 500, -1) if appliance.sh(f"getent passwd {u}", check=False).returncode][:2]
    low, olga = free
    # A member of jupyterhub-users (put there directly: applctl adduser would refuse
    # it) whose uid is below min_uid: only min_uid can refuse it.
    appliance.sh(f"useradd -u {low} --create-home lowuid && gpasswd -a lowuid jupyterhub-users")
    reply = hub_asks(appliance, "spawn", "lowuid")
    assert reply["ok"] is False and reply["error"]["code"] == "invalid_user", reply
    assert reply["error"]["message"] == (f"lowuid is a system account (uid {low}); only uids from 1000 up are "
                                         "accepted (daemon.min_uid in appliance.toml)")
    # The daemon follows daemon.min_uid: at olga's uid she is accepted (asked for her
    # server's state only), one above it her spawn is refused. Everyone else is above both.
    appliance.sh(f"useradd -u {olga} --create-home olga && gpasswd -a olga jupyterhub-users")
    try:
        appliance.sh(f"applctl config set daemon.min_uid {olga} && applctl reload")
        reply = hub_asks(appliance, "status", "olga")
        assert reply["ok"] is True and reply["state"] == "inactive", reply
        appliance.sh(f"applctl config set daemon.min_uid {olga + 1} && applctl reload")
        reply = hub_asks(appliance, "spawn", "olga")
        assert reply["ok"] is False and reply["error"]["code"] == "invalid_user", reply
        assert reply["error"]["message"] == (f"olga is a system account (uid {olga}); only uids from {olga + 1} up "
                                             "are accepted (daemon.min_uid in appliance.toml)")
    finally:
        appliance.sh("applctl config unset daemon.min_uid && applctl reload")
        appliance.wait_hub()
    assert appliance.sh("systemctl is-active jupyter-olga.service jupyter-lowuid.service",
                        check=False).stdout.split() == ["inactive", "inactive"]
