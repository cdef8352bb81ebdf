"""IPv6 literals in URLs: every URL the appliance builds from hub.bind_address parses."""

from __future__ import annotations

import urllib.parse

import pytest
from traitlets.config import Config

from appliance import config
from appliance.chp import command
from appliance.cli import status
from appliance.hub import configurer
from appliance.net import http_url, url_host
from appliance.state import APPLCTL_TOKEN, PROXY_TOKEN


@pytest.mark.parametrize("address, url", [
    ("::", "http://[::]:8000/hub/"),
    ("::1", "http://[::1]:8000/hub/"),
    ("fe80::1", "http://[fe80::1]:8000/hub/"),
    ("127.0.0.1", "http://127.0.0.1:8000/hub/"),
    ("", "http://:8000/hub/"),
])
def test_http_url_brackets_ipv6_literals_only(address, url):
    assert http_url(address, 8000, "/hub/") == url
    parsed = urllib.parse.urlsplit(url)
    assert parsed.port == 8000  # urllib can read it back
    assert (parsed.hostname or "") == address
    assert url_host(f"[{address}]") == f"[{address}]"  # never bracketed twice


@pytest.mark.parametrize("address, bind_url, local", [
    ("::", "http://[::]:8000", "http://[::1]:8000/hub/api/"),
    ("::1", "http://[::1]:8000", "http://[::1]:8000/hub/api/"),
    ("127.0.0.1", "http://127.0.0.1:8000", "http://127.0.0.1:8000/hub/api/"),
    ("", "http://:8000", "http://127.0.0.1:8000/hub/api/"),
])
def test_hub_proxy_and_applctl_urls_for_each_bind_address(tmp_path, address, bind_url, local):
    cfg = config.loads(f'[hub]\nbind_address = "{address}"\n')
    (tmp_path / PROXY_TOKEN).write_text("p\n")
    (tmp_path / APPLCTL_TOKEN).write_text("a\n")
    c = Config()
    configurer.apply(c, cfg, str(tmp_path))
    assert c.JupyterHub.bind_url == bind_url
    assert urllib.parse.urlsplit(c.JupyterHub.bind_url).port == 8000
    assert status.local_url(cfg) == local
    assert urllib.parse.urlsplit(status.local_url(cfg)).port == 8000
    public = status.public_url(cfg)
    assert urllib.parse.urlsplit(public).port == 8000
    if address == "::1":
        assert public == "http://[::1]:8000/"
    # configurable-http-proxy takes the bare address for --ip.
    argv = command(cfg)
    assert (argv[argv.index("--ip") + 1] if "--ip" in argv else "") == address
