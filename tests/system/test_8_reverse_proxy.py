"""nginx and Apache from Debian in front of the appliance (applctl proxy): TLS with a
certificate made here, the login journey and a kernel over its websocket through
the web server, the http redirect, the appliance's port closed on the external
address, the site password, and refusals that leave the working site serving.

The container shares the host's network, so the web servers listen on free ports
(--http-port, --https-port) and Debian's default sites are taken out of the way.
"""

from __future__ import annotations

import json
import socket

import pytest
import requests
import urllib3
import webservers
from booted import free_port
from browser import Browser
from webservers import CERT, KEY, NAME

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

SITE_PASSWORD = "site pass phrase"
USERS = {"web1": "web-pass-1", "web2": "web-pass-2"}
SITES = {"nginx": "/etc/nginx/sites-available/jupyterhub-appliance.conf",
         "apache": "/etc/apache2/sites-available/jupyterhub-appliance.conf"}


def external_address() -> str:
    """This machine's address on its way out (the container shares it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
        return s.getsockname()[0]


@pytest.fixture(scope="module")
def web(appliance):
    app = appliance
    webservers.install(app)
    for user, password in USERS.items():
        app.sh(f"useradd -m {user} && echo {user}:{password} | chpasswd && applctl adduser {user} >/dev/null")
    yield app
    app.sh("applctl stop --all >/dev/null; applctl deluser web1 >/dev/null; applctl deluser web2 >/dev/null",
           check=False)
    webservers.purge(app)


def https(port: int, auth=None) -> Browser:
    b = Browser(f"https://127.0.0.1:{port}")
    b.s.verify = False
    b.s.trust_env = False  # else requests prefers REQUESTS_CA_BUNDLE from the environment to verify=False
    b.s.auth = auth
    return b


def journey(port: int, user: str, auth=None) -> None:
    """Log in through the web server, start the server, run code over the websocket."""
    b = https(port, auth)
    b.login_and_start(user, USERS[user])
    b.wait_for_server(user)
    assert b.execute(user, b.start_kernel(user), "print(6 * 7)").strip() == "42"
    # The hub saw https (X-Scheme): its login cookie is a secure one.
    assert any(c.secure for c in b.s.cookies if c.name.startswith("jupyterhub-session")), list(b.s.cookies)
    b.s.delete(f"{b.base}/hub/api/users/{user}/server", headers=b.hub_xsrf(), timeout=60)
    b.s.close()  # no idle keep-alive connection left in a web server's worker


def refused(app, command: str, says: str) -> None:
    r = app.sh(command, check=False)
    assert r.returncode != 0 and says in r.stderr, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("kind", ["nginx", "apache"])
def test_a_web_server_in_front_with_tls_websockets_and_a_site_password(web, kind):
    app = web
    http_port, https_port = free_port(), free_port()
    direct = f"http://{external_address()}:{app.port}/hub/api/"
    assert requests.get(direct, timeout=10).status_code == 200  # before: open on every address

    try:
        set_up_check_and_remove(app, kind, http_port, https_port, direct)
    finally:  # a failure leaves nothing set up for the next server
        app.sh("applctl proxy remove >/dev/null 2>&1", check=False)


def set_up_check_and_remove(app, kind: str, http_port: int, https_port: int, direct: str) -> None:
    out = json.loads(app.sh(f"applctl proxy setup {kind} --server-name {NAME} --cert {CERT} --key {KEY} "
                            f"--http-port {http_port} --https-port {https_port} --json").stdout)
    assert out["url"] == f"https://{NAME}:{https_port}/" and out["bind_address"] == "127.0.0.1"
    app.wait_hub()
    with pytest.raises(requests.ConnectionError):
        requests.get(direct, timeout=10)  # the appliance's own port: loopback only now

    journey(https_port, "web1")
    # The hub's log names the real client, not the web server (X-Forwarded-For, trusted from loopback only).
    ext = external_address()
    # (a 404 is logged at WARNING, which every log level shows)
    requests.get(f"https://{ext}:{https_port}/hub/no-such-page?probe={kind}", verify=False, timeout=10)
    app.ct.wait_for(f"journalctl -u jupyterhub --no-pager -n 300 | grep -F 'probe={kind} (@{ext})'", timeout=20)
    r = requests.get(f"http://127.0.0.1:{http_port}/hub/login?next=%2Fhub%2F", allow_redirects=False, timeout=10)
    assert r.status_code == 301 and r.headers["Location"] == f"https://{NAME}:{https_port}/hub/login?next=%2Fhub%2F"
    r = https(https_port).get("/hub/login")
    assert r.headers["Server"] in ("nginx", "Apache"), r.headers  # no version
    assert r.headers["Strict-Transport-Security"].startswith("max-age=")
    status = json.loads(app.sh("applctl proxy status --json").stdout)
    assert status["kind"] == kind and status["answers"] and status["cert_days_left"] in (29, 30)
    assert not status["password"] and status["direct_port"] == "loopback only"

    # The site password: 401 without it, the whole journey with it, health open.
    app.sh("applctl proxy password set --stdin", input=SITE_PASSWORD + "\n")
    mode = app.sh("stat -c '%a %U %G' /etc/jupyterhub-appliance/htpasswd").stdout.split()
    assert mode == ["640", "root", "www-data"]
    assert https(https_port).get("/hub/login").status_code == 401
    assert https(https_port, ("hub", "wrong password")).get("/hub/login").status_code == 401
    assert https(https_port).get("/hub/health").status_code == 200
    journey(https_port, "web2", auth=("hub", SITE_PASSWORD))

    # Refusals: nothing changes, and the working site keeps serving.
    before = app.sh(f"cat {SITES[kind]}").stdout
    setup = (f"applctl proxy setup {kind} --server-name {NAME} --http-port {http_port} "
             f"--https-port {https_port}")
    refused(app, f"{setup} --cert /etc/ssl/appliance-test/missing.pem --key {KEY}",
            "--cert /etc/ssl/appliance-test/missing.pem: no such file or directory")
    refused(app, f"{setup} --cert {CERT} --key /etc/ssl/appliance-test/missing.key", "--key")
    refused(app, f"applctl proxy setup {kind} --server-name 'my hub' --cert {CERT} --key {KEY}",
            "is not a host name")
    refused(app, f"applctl proxy setup caddy --server-name {NAME} --self-signed", "'caddy' is not one of")
    refused(app, f"{setup} --self-signed --cert {CERT}", "give either --cert FILE and --key FILE, or --self-signed")
    # An administrator's edit that breaks the template: the server's own check refuses it.
    template = f"/etc/jupyterhub-appliance/{kind}-site.conf.in"
    app.sh(f"cp {template} /root/template.orig && echo 'no_such_directive on;' >> {template}")
    try:
        check = "nginx -t -q" if kind == "nginx" else "apache2ctl configtest"
        refused(app, f"{setup} --cert {CERT} --key {KEY}", f"{check} refused the new configuration")
    finally:
        app.sh(f"cp /root/template.orig {template}")
    assert app.sh(f"cat {SITES[kind]}").stdout == before
    assert https(https_port, ("hub", SITE_PASSWORD)).get("/hub/api/").status_code == 200

    app.sh("applctl proxy password off")
    assert https(https_port).get("/hub/api/").status_code == 200
    app.sh("applctl proxy remove")
    app.wait_hub()
    assert app.sh(f"test -e {SITES[kind]}", check=False).returncode == 1
    assert requests.get(direct, timeout=10).status_code == 200  # open again, as before setup
    with pytest.raises(requests.ConnectionError):
        requests.get(f"https://127.0.0.1:{https_port}/hub/api/", verify=False, timeout=10)
