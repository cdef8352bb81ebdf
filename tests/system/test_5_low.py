"""The "Low" items of issue 26's review, on the booted appliance: each test performs
the attack and shows it fail.

- the proxy token is root's: systemd reads it (LoadCredential=, which follows links)
  from a directory the hub cannot write, so a link the hub plants is never read;
- the site password's /hub/health exemption lets no other path through;
- `kernels add` under sudo refuses an environment with one file someone else can change;
- secrets for every server live in root's [spawner] environment_file, not in the
  world-readable appliance.toml;
- the certificate the web server reads is checked as the site names it, links included.
"""

from __future__ import annotations

import http.client
import json
import ssl

import pytest
import webservers
from booted import USERS, free_port
from browser import Browser
from webservers import CERT, KEY, NAME

CONFIG = "/etc/jupyterhub/appliance.toml"
SECRETS = "/var/lib/jupyterhub-appliance/secrets"
HUB_STATE = "/var/lib/jupyterhub"
ADMIN, ADMIN_PASSWORD = "lowadmin", "low-admin-pass-5"
SITE_PASSWORD = "low site pass"


@pytest.fixture(scope="module")
def app(appliance):
    saved = appliance.sh(f"cat {CONFIG}").stdout
    appliance.sh(f"id {ADMIN} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {ADMIN}")
    appliance.sh(f"usermod -aG jupyterhub-users,jupyterhub-admins {ADMIN}")
    appliance.sh("chpasswd", input=f"{ADMIN}:{ADMIN_PASSWORD}\n")
    appliance.sh("applctl adduser alice >/dev/null")
    yield appliance
    appliance.ct.write(CONFIG, saved)
    appliance.sh(f"rm -f {HUB_STATE}/proxy_token {HUB_STATE}/proxy-token /etc/jupyterhub/spawner.env; "
                 "rm -rf /opt/lowvenv /usr/local/share/jupyter/kernels/lowvenv; applctl stop --all >/dev/null",
                 check=False)
    appliance.sh("applctl reload >/dev/null", check=False)
    appliance.wait_hub()


def start_alice(app) -> Browser:
    b = Browser(app.url)
    b.login_and_start("alice", USERS["alice"])
    try:
        b.wait_for_server("alice")
    except AssertionError as e:
        said = app.sh("journalctl -u jupyter-alice -u jupyterhub-appliance -n 60 --no-pager", check=False).stdout
        raise AssertionError(f"{e}\n{said}") from None
    return b


def as_admin(app, args: str):
    """sudo applctl ARGS as a jupyterhub-admin; never a traceback."""
    r = app.sh(f"sudo -S -p '' applctl {args}", user=ADMIN, input=f"{ADMIN_PASSWORD}\n", check=False)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


def proxy_api_status(app, token: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", app.proxy_api_port, timeout=10)
    conn.request("GET", "/api/routes", headers={"Authorization": f"token {token}"})
    return conn.getresponse().status


# --- the proxy token ------------------------------------------------------------------

def test_links_the_hub_plants_in_its_directory_never_reach_the_proxy_or_the_hub(app):
    # Root's, where the hub cannot even look; nothing left in the hub's directory.
    assert app.sh(f"stat -c '%U %a' {SECRETS} {SECRETS}/proxy_token").stdout.split("\n")[:2] == \
        ["root 700", "root 600"]
    assert app.sh(f"test -e {HUB_STATE}/proxy_token", check=False).returncode != 0
    denied = app.sh(f"cat {SECRETS}/proxy_token", user="jupyterhub", check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    # As the hub's uid: links to /etc/shadow at the old name and at the credential's name.
    for name in ("proxy_token", "proxy-token"):
        app.sh(f"ln -s /etc/shadow {HUB_STATE}/{name}", user="jupyterhub")
    app.sh("systemctl restart jupyterhub-proxy jupyterhub")
    app.wait_hub()
    token = app.sh(f"cat {SECRETS}/proxy_token").stdout.strip()
    for unit in ("jupyterhub-proxy.service", "jupyterhub.service"):
        got = app.sh(f"cat /run/credentials/{unit}/proxy-token").stdout
        assert "root:" not in got and got.strip() == token, unit
    assert proxy_api_status(app, token) == 200  # the proxy took root's token, and the hub works (wait_hub)
    # doctor --fix drops the old name without following it.
    app.sh("applctl doctor --fix >/dev/null 2>&1")
    assert app.sh(f"test -L {HUB_STATE}/proxy_token", check=False).returncode != 0
    assert app.sh("test -L /etc/shadow", check=False).returncode != 0 and "root:" in app.sh("cat /etc/shadow").stdout
    app.sh(f"rm -f {HUB_STATE}/proxy-token")
    app.wait_hub()
    assert proxy_api_status(app, app.sh(f"cat {SECRETS}/proxy_token").stdout.strip()) == 200


# --- kernels add ----------------------------------------------------------------------

def test_kernels_add_refuses_an_environment_with_one_file_a_user_can_change(app):
    pyver = app.sh("python3 -c 'import sys; print(*sys.version_info[:2], sep=\".\")'").stdout.strip()
    site = f"/opt/lowvenv/lib/python{pyver}/site-packages"
    app.sh(f"python3 -m venv --without-pip /opt/lowvenv && echo /usr/lib/jupyterhub-appliance/user/lib/python{pyver}/"
           f"site-packages > {site}/userenv.pth")
    app.sh(f"touch {site}/sitecustomize.py && chown alice {site}/sitecustomize.py")
    r = as_admin(app, "kernels add --name lowvenv --python /opt/lowvenv/bin/python")
    assert r.returncode == 1 and f"{site}/sitecustomize.py is owned by uid" in r.stderr, r.stderr
    said = [line for line in r.stderr.splitlines() if line.startswith("applctl:")]  # (sudo may warn too)
    assert len(said) == 1 and "every file and directory of its environment" in said[0], r.stderr
    app.sh(f"chown root {site}/sitecustomize.py && chmod o+w {site}/sitecustomize.py")
    r = as_admin(app, "kernels add --name lowvenv --python /opt/lowvenv/bin/python")
    assert r.returncode == 1 and f"{site}/sitecustomize.py is writable by others" in r.stderr, r.stderr
    # A link in the tree to a directory the user owns.
    app.sh(f"chmod o-w {site}/sitecustomize.py && ln -s /home/alice {site}/alices")
    r = as_admin(app, "kernels add --name lowvenv --python /opt/lowvenv/bin/python")
    assert r.returncode == 1 and f"{site}/alices is a link to /home/alice, which is owned by uid" in r.stderr
    assert app.sh("test -e /usr/local/share/jupyter/kernels/lowvenv", check=False).returncode != 0
    # All root's: accepted.
    app.sh(f"rm {site}/alices")
    assert as_admin(app, "kernels add --name lowvenv --python /opt/lowvenv/bin/python").returncode == 0
    assert app.sh("applctl kernels remove lowvenv").returncode == 0


# --- secrets for every server -------------------------------------------------------

def test_secrets_for_servers_come_from_roots_file_never_from_appliance_toml(app):
    before = app.sh(f"sha256sum {CONFIG}").stdout
    r = app.sh("applctl config set spawner.environment.HF_TOKEN hf_secret_in_toml", check=False)
    assert r.returncode == 1 and "readable by every local account" in r.stderr and "environment_file" in r.stderr
    assert "hf_secret_in_toml" not in r.stderr and app.sh(f"sha256sum {CONFIG}").stdout == before
    # Only root may name the file; a jupyterhub-admin may not (it would leak a root file).
    r = as_admin(app, 'config set spawner.environment_file "/etc/jupyterhub/spawner.env"')
    assert r.returncode == 1 and "root" in r.stderr, r.stderr
    app.sh("install -m 0644 /dev/null /etc/jupyterhub/spawner.env && "
           "echo 'HF_TOKEN=hf_from_roots_file' > /etc/jupyterhub/spawner.env")
    app.ct.write(CONFIG, app.config_text('[spawner]\nenvironment_file = "/etc/jupyterhub/spawner.env"\n'))
    r = app.sh("applctl reload", check=False)  # readable by others: refused, nothing restarted
    assert r.returncode == 1 and "mode 0644" in r.stderr and "hf_from_roots_file" not in r.stderr, r.stderr
    try:
        app.sh("chmod 0600 /etc/jupyterhub/spawner.env && applctl reload >/dev/null")
        app.wait_hub()
        assert app.sh("cat /etc/jupyterhub/spawner.env", user="jupyterhub", check=False).returncode != 0
        start_alice(app)
        pid = app.unit_props("jupyter-alice.service", "MainPID")["MainPID"]
        assert "HF_TOKEN=hf_from_roots_file" in app.sh(f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout.splitlines()
        hub_pid = app.unit_props("jupyterhub.service", "MainPID")["MainPID"]
        assert "hf_from_roots_file" not in app.sh(f"tr '\\0' '\\n' < /proc/{hub_pid}/environ").stdout
    finally:
        app.sh("applctl stop alice >/dev/null", check=False)
        app.ct.write(CONFIG, app.config_text())
        app.sh("applctl reload >/dev/null")
        app.wait_hub()


# --- the web server in front ----------------------------------------------------------

@pytest.fixture(scope="module")
def web(app):
    webservers.install(app)
    start_alice(app)  # alice's server runs: its /api answers anyone who reaches it
    yield app
    app.sh("applctl stop alice >/dev/null", check=False)
    webservers.purge(app)


def raw_get(port: int, path: str, auth: str | None = None) -> tuple[int, bytes]:
    """One request with the path exactly as given (no client normalizes it)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=20)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", NAME)
    if auth:
        conn.putheader("Authorization", "Basic " + auth)
    conn.endheaders()
    r = conn.getresponse()
    return r.status, r.read()


# Each would reach alice's server's /api (which answers without a login) if the
# exemption let it past the site password.
SNEAKY = ["/hub/health/../../user/alice/api", "/hub/health/%2e%2e/%2e%2e/user/alice/api",
          "/hub/health/%2E%2E%2F%2E%2E%2Fuser/alice/api", "//hub/health/../../user/alice/api",
          "/hub//health/..//../user/alice/api", "/hub/health%2F..%2F..%2Fuser/alice/api",
          "/hub/health;/../../user/alice/api", "/hub/health\\..\\..\\user/alice/api",
          "/user/alice/api/..%2F..%2F..%2Fhub/health", "/user/alice/api/%2e%2e/%2e%2e/%2e%2e/hub/health",
          "/user/alice/api/%2e%2e%2f%2e%2e%2f%2e%2e%2fhub/health", "/user/alice/api/../../../hub/health",
          "/user/alice/api/;/../../../hub/health", "/user/alice/api?/../../hub/health",
          "/user/alice/%2e%2e/alice/api/../../../hub/health", "/hub/%68ealth/../../user/alice/api"]


@pytest.mark.parametrize("kind", ["nginx", "apache"])
def test_the_health_exemption_lets_no_other_path_past_the_site_password(web, kind):
    app = web
    http_port, https_port = free_port(), free_port()
    try:
        app.sh(f"applctl proxy setup {kind} --server-name {NAME} --cert {CERT} --key {KEY} "
               f"--http-port {http_port} --https-port {https_port} --keep-direct >/dev/null")
        app.sh("applctl proxy password set --stdin >/dev/null", input=SITE_PASSWORD + "\n")
        app.wait_hub()
        assert b"version" in Browser(app.url).get("/user/alice/api").content
        health = raw_get(https_port, "/hub/health")
        assert health[0] == 200
        assert raw_get(https_port, "/user/alice/api")[0] == 401
        for path in SNEAKY:
            status, body = raw_get(https_port, path)
            assert (status, body) == health or status in (400, 401, 403), (kind, path, status, body[:200])
            assert b"version" not in body, (kind, path, status, body[:200])
    finally:
        app.sh("applctl proxy remove >/dev/null 2>&1", check=False)
        app.wait_hub()


def test_a_certificate_behind_a_link_a_user_could_swap_is_refused_and_the_site_names_what_was_checked(web):
    app = web
    http_port, https_port = free_port(), free_port()
    setup = (f"applctl proxy setup nginx --server-name {NAME} --http-port {http_port} --https-port {https_port} "
             "--keep-direct")
    # A link in alice's home: the file it leads to is root's, but alice could swap the link.
    app.sh(f"ln -sf {CERT} /home/alice/hub.pem && chown -h alice: /home/alice/hub.pem")
    r = app.sh(f"{setup} --cert /home/alice/hub.pem --key {KEY}", check=False)
    assert r.returncode == 1 and "/home/alice is owned by uid" in r.stderr and "Traceback" not in r.stderr
    assert app.sh("test -e /etc/nginx/sites-available/jupyterhub-appliance.conf", check=False).returncode != 0
    # A link in root's directories (certbot's live/ -> archive/): accepted, named as given.
    app.sh("mkdir -p /etc/ssl/appliance-test/live && ln -sf ../hub.pem /etc/ssl/appliance-test/live/hub.pem")
    try:
        out = json.loads(app.sh(f"{setup} --cert /etc/ssl/appliance-test/live/hub.pem --key {KEY} --json").stdout)
        assert out["url"] == f"https://{NAME}:{https_port}/"
        site = app.sh("cat /etc/nginx/sites-available/jupyterhub-appliance.conf").stdout
        assert "ssl_certificate     /etc/ssl/appliance-test/live/hub.pem;" in site
    finally:
        app.sh("applctl proxy remove >/dev/null 2>&1; rm -f /home/alice/hub.pem", check=False)
        app.wait_hub()
