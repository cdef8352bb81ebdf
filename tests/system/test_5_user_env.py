"""The user environment as a user meets it: the page each documented default_url
lands on, and JupyterLab's news prompt (off unless the administrator turns it on)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from browser import Browser

TOP = Path(__file__).resolve().parents[2]
USER, PASSWORD = "nina", "nina-pass-6"
NEWS_PLUGIN = "@jupyterlab/apputils-extension:announcements"
USER_ENV = "/usr/lib/jupyterhub-appliance/user"


def documented_default_urls() -> list[str]:
    """Every value the shipped appliance.toml offers for default_url, from its comment."""
    text = (TOP / "etc/jupyterhub/appliance.toml").read_text()
    block = re.search(r"^# The page a user lands on:.*?^# default_url = .*?$", text, re.M | re.S).group(0)
    return list(dict.fromkeys(re.findall(r'"(/[^"]*)"', block)))


def applctl(app, args: str) -> str:
    r = app.sh(f"applctl {args}", check=False)
    assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r.stdout, r.stderr)
    return r.stdout


def reload(app) -> None:
    applctl(app, "reload")
    app.wait_hub()


def stop_server(app) -> None:
    applctl(app, f"stop {USER}")
    app.ct.wait_for(f"! systemctl is-active --quiet jupyter-{USER}.service", timeout=60)


def page_config(html: str) -> dict:
    m = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S)
    assert m, "the page has no jupyter-config-data"
    return json.loads(m.group(1))


def land(app, timeout: float = 180):
    """Log in as a browser does and open /user/NAME/ once the server is up: the
    server's redirects to its default_url and through the hub's OAuth are followed."""
    b = Browser(app.url)
    r = b.login_and_start(USER, PASSWORD)
    assert r.status_code in (200, 302), (r.status_code, r.url, r.text[:300])
    deadline = time.monotonic() + timeout
    while True:
        r = b.get(f"/user/{USER}/")
        if r.status_code == 200 and urlsplit(r.url).path.startswith(f"/user/{USER}/"):
            return r
        if time.monotonic() > deadline:
            raise AssertionError(f"{USER} did not land on their server in {timeout} s: {r.status_code} {r.url}")
        time.sleep(1)


# Set when a test put appliance.toml back but left the hub running with its own
# default_url: the next test that needs the default (or the module's end) reloads.
# The tests of one default_url after another each reload for their own anyway.
stale = {"default_url": False}


def defaults_running(app) -> None:
    """The hub runs with appliance.toml as it is now (default_url unset)."""
    if stale["default_url"]:
        reload(app)
        stale["default_url"] = False


@pytest.fixture(scope="module")
def nina(appliance):
    appliance.sh(f"useradd --create-home --shell /bin/bash {USER}")
    appliance.sh("chpasswd", input=f"{USER}:{PASSWORD}\n")
    applctl(appliance, f"adduser {USER}")
    appliance.sh(f"install -d -o {USER} -g {USER} /home/{USER}/course")
    yield appliance
    appliance.sh(f"applctl stop {USER}", check=False)
    defaults_running(appliance)


def test_the_documented_default_urls_are_lab_and_tree():
    assert {u.split("/")[1] for u in documented_default_urls()} == {"lab", "tree"}
    assert "/lab" in documented_default_urls() and "/tree" in documented_default_urls()


@pytest.mark.parametrize("url", documented_default_urls())
def test_each_documented_default_url_lands_on_its_app(nina, url):
    app = nina
    applctl(app, f"config set spawner.default_url {url}")
    try:
        reload(app)
        r = land(app)
        assert urlsplit(r.url).path.rstrip("/") == f"/user/{USER}{url}".rstrip("/"), r.url
        config = page_config(r.text)
        if url.startswith("/lab"):
            assert config["appName"] == "JupyterLab", config.get("appName")
        else:
            # Notebook 7's file browser: the classic view.
            assert config["notebookPage"] == "tree" and config["fullStaticUrl"].endswith("/static/notebook")
            assert config["treePath"] == url.removeprefix("/tree").strip("/")
    finally:
        stop_server(app)
        applctl(app, "config unset spawner.default_url")
        stale["default_url"] = True  # the next test reloads: its own default_url, or none


def lab_disabled_extensions(app) -> list[str]:
    r = land(app)
    assert urlsplit(r.url).path == f"/user/{USER}/lab", r.url
    return page_config(r.text)["disabledExtensions"]


def test_jupyterlab_news_is_off_by_default_and_the_administrator_can_turn_it_on(nina):
    app = nina
    defaults_running(app)
    # The plugin that asks about and fetches the news is the one this JupyterLab has.
    app.sh(f"grep -qF '{NEWS_PLUGIN}' {USER_ENV}/share/jupyter/lab/static/*.js")
    assert NEWS_PLUGIN in lab_disabled_extensions(app)
    stop_server(app)
    applctl(app, "config set spawner.jupyterlab_news true")
    try:
        reload(app)
        assert NEWS_PLUGIN not in lab_disabled_extensions(app)
    finally:
        stop_server(app)
        applctl(app, "config unset spawner.jupyterlab_news")
        reload(app)
    assert NEWS_PLUGIN in lab_disabled_extensions(app)
    stop_server(app)
