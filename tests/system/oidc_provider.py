"""A real OpenID provider in the booted appliance, for the test_9_sso* modules: npm's
oidc-provider (OpenID certified) under Debian's nodejs (the proxy's runtime, so
already installed), configured by oidc/provider.mjs, listening on 127.0.0.1 of the
network the container shares with the host.

Its npm packages are installed once per machine, from oidc/package-lock.json (exact
versions and their integrity hashes), into the test cache with the host's npm
(scripts/host-tools installs npm): a few seconds the first time, nothing after.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin

import requests
from booted import free_port
from container import CACHE
from visitor_client import hub_api

HERE = Path(__file__).parent / "oidc"
IN_CT = "/opt/appliance-test-oidc"
UNIT = "appliance-test-oidc.service"
CLIENT_ID, CLIENT_SECRET = "jupyterhub", "test-client-secret-Zq81"
CONFIG = "/etc/jupyterhub/appliance.toml"
SECRET_FILE = "/etc/jupyterhub/oidc-client-secret"


OTHER_CLIENT_ID = "another-app"  # a second client of the provider, with the hub's redirect URI too


def other_client(redirect_uri: str) -> dict:
    """Another application at the same provider: a code issued to it must not log
    anyone into the hub."""
    return {"client_id": OTHER_CLIENT_ID, "client_secret": "another-app-secret-7Hq", "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code"], "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_post"}


def node_modules() -> Path:
    """oidc-provider and its dependencies, npm ci'd into the cache once per lock file."""
    lock = (HERE / "package-lock.json").read_bytes()
    home = CACHE / f"oidc-provider-{hashlib.sha256(lock).hexdigest()[:16]}"
    if (home / ".complete").exists():
        return home / "node_modules"
    tmp = home.with_name(home.name + f".tmp.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(HERE / name, tmp / name)
    # --ignore-scripts: none of them builds anything; nothing of npm's runs but the download.
    subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"], cwd=tmp,
                   check=True, stdout=subprocess.DEVNULL)
    (tmp / ".complete").touch()
    if (home / ".complete").exists():  # another run made it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(home, ignore_errors=True)
        tmp.rename(home)
    return home / "node_modules"


class Provider:
    """The running provider: its issuer, and a person's way through its login form."""

    def __init__(self, app, redirect_uri: str, access_token_ttl: int | None = None):
        self.app = app
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        modules = node_modules()
        dest = app.ct.root / IN_CT.lstrip("/")
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        subprocess.run(["cp", "-a", "--reflink=auto", str(modules), str(dest / "node_modules")], check=True)
        shutil.copy2(HERE / "provider.mjs", dest / "provider.mjs")
        (dest / "config.json").write_text(json.dumps({"issuer": self.issuer, "client_id": CLIENT_ID,
                                                      "client_secret": CLIENT_SECRET,
                                                      "redirect_uris": [redirect_uri],
                                                      "other_clients": [other_client(redirect_uri)],
                                                      "access_token_ttl": access_token_ttl}))
        # (a module whose teardown broke off may have left the unit behind: it goes first)
        app.sh(f"systemctl stop {UNIT}; systemctl reset-failed {UNIT}", check=False)
        app.sh(f"chmod -R a+rX {IN_CT} && systemd-run --quiet --unit={UNIT} -p DynamicUser=yes "
               f"/usr/bin/node {IN_CT}/provider.mjs {self.port} {IN_CT}/config.json")
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(self.issuer + "/.well-known/openid-configuration", timeout=5).ok:
                    return
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                said = app.sh(f"journalctl -u {UNIT} -n 30 --no-pager", check=False).stdout
                raise AssertionError(f"the OpenID provider did not answer in 60 s:\n{said}")
            time.sleep(0.3)

    def disable(self, login: str, disabled: bool = True) -> None:
        """Disable LOGIN at the provider (or enable again): provider.mjs reads the file
        "disabled" at every lookup."""
        path = self.app.ct.root / IN_CT.lstrip("/") / "disabled"
        names = set(path.read_text().split()) if path.exists() else set()
        path.write_text("".join(f"{n}\n" for n in sorted(names - {login} | ({login} if disabled else set()))))
        path.chmod(0o644)

    def stop(self) -> None:
        # node ends on SIGTERM with a failure, which keeps the unit's name loaded: forget
        # it, so the next module's provider can start under the same name.
        self.app.sh(f"systemctl stop {UNIT}; systemctl reset-failed {UNIT} 2>/dev/null; rm -rf {IN_CT}", check=False)

    def sign_in(self, s: requests.Session, r: requests.Response, login: str) -> requests.Response:
        """From the hub's redirect to the provider (r), through its login form as
        LOGIN, to the provider's redirect back to the hub (returned, not followed)."""
        while r.is_redirect and r.headers["location"].startswith(("/", self.issuer + "/")):
            r = s.get(urljoin(r.url, r.headers["location"]), allow_redirects=False, timeout=30)
            if r.status_code == 200 and "<form" in r.text:
                action = re.search(r'<form[^>]*action="([^"]+)"', r.text).group(1)
                fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', r.text))
                fields.update(login=login, password="any")
                r = s.post(urljoin(r.url, action), data=fields, allow_redirects=False, timeout=30)
        assert r.is_redirect, f"the provider did not send {login} back: {r.status_code} {r.text[:300]}"
        return r


def oidc_toml(provider: Provider, oidc: str = "") -> str:
    """appliance.toml's single sign-on through `provider`, with more [oidc] keys."""
    return (f'[auth]\ntype = "oidc"\n[oidc]\nissuer = "{provider.issuer}"\nclient_id = "{CLIENT_ID}"\n'
            f'scopes = ["openid", "profile", "groups"]\nallowed_groups = ["lab"]\n{oidc}')


def in_users_group(app, name: str) -> bool:
    return name in app.sh("getent group jupyterhub-users").stdout.strip().split(":")[-1].split(",")


@contextmanager
def single_sign_on(app, oidc: str = "", more_toml: str = "", access_token_ttl: int | None = None,
                   reload: str = "applctl reload", servers: tuple[str, ...] = ("alice",)):
    """The appliance switched to single sign-on through a provider of its own (yielded),
    with the client secret in place and alice in jupyterhub-users (the provider's
    alice maps to her); and afterwards back to its own appliance.toml, with the
    servers of `servers` stopped and alice as she was."""
    provider = Provider(app, f"{app.url}/hub/oauth_callback", access_token_ttl=access_token_ttl)
    added = not in_users_group(app, "alice")
    try:
        if added:
            app.sh("applctl adduser alice")
        app.sh(f"install -m 600 /dev/null {SECRET_FILE} && echo {CLIENT_SECRET} > {SECRET_FILE}")
        app.ct.write(CONFIG, app.config_text(oidc_toml(provider, oidc) + more_toml))
        app.sh(reload)
        app.wait_hub()
        yield provider
    finally:
        app.ct.write(CONFIG, app.config_text())
        app.sh("applctl reload", check=False)
        app.wait_hub()
        for name in servers:
            hub_api(app, "DELETE", f"/users/{name}/server")
        provider.stop()
        app.sh(f"rm -f {SECRET_FILE}" + ("; gpasswd -d alice jupyterhub-users >/dev/null" if added else ""),
               check=False)
