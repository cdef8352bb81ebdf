"""`applctl proxy`: nginx or Apache in front of the appliance, with TLS on one
public name, websockets, and an optional site-wide password (appliance/revproxy)."""

from __future__ import annotations

import http.client
import socket
import ssl
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from .. import config_edit, passwords
from ..revproxy import htpasswd, setup_record, tls
from ..revproxy.install import Change, SetupError, ready, remove_site, trusted_file, write_site
from ..revproxy.layout import apache_listens, layout
from ..revproxy.site import KINDS, TEMPLATES, Site, SiteError, check, check_server_name, render
from .common import config_path, load_config
from .output import Failure, emit, example, json_option, need_root, wraps_failure
from .reload import apply_configuration

LOOPBACK = "127.0.0.1"
_refusals = wraps_failure((SetupError, SiteError, passwords.PasswordError, config_edit.EditError))


@click.group(name="proxy")
def proxy_group() -> None:
    """A web server in front: nginx or Apache with TLS on one public name,
    websockets, and an optional site-wide password.

    \b
    Example:
      sudo applctl proxy setup nginx --server-name hub.example.org \\
          --cert /etc/ssl/certs/hub.pem --key /etc/ssl/private/hub.key
      sudo applctl proxy password set
    """


def _layout(kind: str):
    try:
        return layout(kind)
    except ValueError as e:
        raise Failure(str(e)) from None


def _site_text(site: Site, lay) -> str:
    """The site file's text; the certificate and key it names are checked each time
    (not one applctl made itself), since root's web server reads what is written."""
    if not site.self_signed:
        tls.check_pair(trusted_file("--cert", site.cert), trusted_file("--key", site.key, secret=True))
    template = TEMPLATES / f"{site.kind}-site.conf.in"
    try:
        text = template.read_text()
    except OSError as e:
        raise Failure(f"cannot read the template {template}: {e.strerror}; reinstall jupyterhub-appliance") from None
    listen = sorted({site.http_port, site.https_port} - apache_listens(lay)) if site.kind == "apache" else []
    return render(text, site, listen)


def _current() -> tuple[Site, dict]:
    found = setup_record.load()
    if found is None:
        raise Failure("no web server is set up in front of the hub; nothing changed "
                      "(set one up with: sudo applctl proxy setup nginx|apache ...)")
    return found


def _bind(address: str) -> dict | None:
    """Set hub.bind_address and apply it; None if it already was."""
    r = config_edit.set_key(config_path(), "hub.bind_address", f'"{address}"')
    return apply_configuration() if r["changed"] else None


@proxy_group.command()
@click.argument("kind", type=click.Choice(KINDS))
@click.option("--server-name", required=True, help="the public DNS name, e.g. hub.example.org")
@click.option("--cert", help="PEM certificate (full chain), owned by root")
@click.option("--key", help="its PEM private key, owned by root, mode 600")
@click.option("--self-signed", is_flag=True, help="make a self-signed certificate instead (browsers will warn)")
@click.option("--http-port", type=click.IntRange(1, 65535), default=80, show_default=True)
@click.option("--https-port", type=click.IntRange(1, 65535), default=443, show_default=True)
@click.option("--max-upload", default="0", show_default=True, help="largest upload, e.g. 2G; 0 is no limit")
@click.option("--keep-direct", is_flag=True, help="keep the appliance's own port open on every address")
@json_option
@example("sudo applctl proxy setup nginx --server-name hub.example.org \\\n"
         "    --cert /etc/letsencrypt/live/hub.example.org/fullchain.pem \\\n"
         "    --key /etc/letsencrypt/live/hub.example.org/privkey.pem\n"
         "sudo applctl proxy setup apache --server-name hub.lab.internal --self-signed")
@_refusals
def setup(kind: str, server_name: str, cert: str | None, key: str | None, self_signed: bool, http_port: int,
          https_port: int, max_upload: str, keep_direct: bool, as_json: bool) -> None:
    """Put nginx or Apache in front: write the site from its template in
    /etc/jupyterhub-appliance, enable it, check it with the server's own test and
    reload; if any of that fails, what was there before is put back. Then the
    appliance's port listens on 127.0.0.1 only, unless --keep-direct."""
    need_root("proxy setup")
    if self_signed == bool(cert or key) or (not self_signed and not (cert and key)):
        raise Failure("give either --cert FILE and --key FILE, or --self-signed")
    cfg = load_config()
    before = setup_record.load()
    if before and before[0].kind != kind:
        raise Failure(f"{before[0].kind} is set up in front of the hub; nothing changed "
                      f"(to switch: sudo applctl proxy remove, then setup {kind})")
    lay = _layout(kind)
    ready(lay)
    if self_signed:  # named after the server, so the name is checked first
        cert, key = (str(p) for p in tls.self_signed_paths(check_server_name(server_name)))
    site = check(Site(kind, server_name, cert, key, self_signed, http_port, https_port, max_upload,
                      f"{LOOPBACK}:{cfg['hub']['port']}",
                      before[0].htpasswd if before else None))
    text = _site_text(site, lay)  # a bad template or certificate is refused before anything is written
    new_tls = [Path(site.cert), Path(site.key)] if self_signed else []
    with Change(lay, new_tls) as change:
        if self_signed:
            tls.make_self_signed(site.server_name)
        write_site(lay, text)
        change.commit(restart=change.enable_modules())
    rest = {"bind_before": before[1]["bind_before"] if before else cfg["hub"]["bind_address"],
            "keep_direct": keep_direct, "password_user": before[1].get("password_user") if before else None}
    setup_record.save(site, rest)
    applied = None if keep_direct else _bind(LOOPBACK)
    url = f"https://{site.server_name}" + ("" if https_port == 443 else f":{https_port}") + "/"
    emit(as_json, {"kind": kind, "site": str(lay.site), "url": url, "self_signed": self_signed,
                   "bind_address": cfg["hub"]["bind_address"] if keep_direct else LOOPBACK,
                   "reloaded": applied is not None},
         f"{kind} serves {url} (configuration: {lay.site})\n"
         + ("the appliance's port stays open on every address (--keep-direct)" if keep_direct else
            f"the appliance's port {cfg['hub']['port']} now listens on {LOOPBACK} only")
         + ("\nthe certificate is self-signed: browsers will warn until you give a real one" if self_signed else ""))


@proxy_group.command()
@json_option
@example("sudo applctl proxy remove")
@_refusals
def remove(as_json: bool) -> None:
    """Take the web server's site away and open the appliance's own port again,
    as it was before setup."""
    need_root("proxy remove")
    site, rest = _current()
    lay = _layout(site.kind)
    with Change(lay, [htpasswd.HTPASSWD]) as change:
        remove_site(lay)
        htpasswd.HTPASSWD.unlink(missing_ok=True)
        change.commit()
    setup_record.forget()
    applied = None if rest.get("keep_direct") else _bind(rest.get("bind_before", ""))
    emit(as_json, {"removed": str(lay.site), "bind_address": rest.get("bind_before", ""),
                   "reloaded": applied is not None},
         f"removed {lay.site}; {site.kind} no longer serves {site.server_name}\n"
         f"the appliance's port listens as before setup ({rest.get('bind_before') or 'every address'})")


def site_answers(site: Site, timeout: float = 5) -> str:
    """The health path through the web server, over TLS with the site's name."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        raw = socket.create_connection((LOOPBACK, site.https_port), timeout=timeout)
        conn = http.client.HTTPSConnection(site.server_name, site.https_port, timeout=timeout)
        conn.sock = ctx.wrap_socket(raw, server_hostname=site.server_name)
        conn.request("GET", "/hub/health", headers={"Host": site.server_name})
        status = conn.getresponse().status
        conn.close()
    except OSError as e:
        return f"no ({e})"
    return "yes" if status == 200 else f"no (HTTP {status})"


@proxy_group.command()
@json_option
@example("applctl proxy status")
@_refusals
def status(as_json: bool) -> None:
    """Which web server is in front, for which name, when its certificate
    expires, whether the site password is on, and whether the site answers."""
    found = setup_record.load()
    if found is None:
        emit(as_json, {"set_up": False}, "no web server is in front: the appliance serves its own port "
             "(set one up with: sudo applctl proxy setup nginx|apache ...)")
        return
    site, rest = found
    lay = _layout(site.kind)
    expires = tls.expiry(Path(site.cert))
    days = None if expires is None else (expires - datetime.now(timezone.utc)).days
    answers = site_answers(site)
    bind = load_config()["hub"]["bind_address"]
    data = {"set_up": True, "kind": site.kind, "server_name": site.server_name, "site": str(lay.site),
            "cert": site.cert, "self_signed": site.self_signed,
            "cert_expires": expires.isoformat() if expires else None, "cert_days_left": days,
            "password": site.htpasswd is not None, "answers": answers == "yes",
            "direct_port": "open" if bind != LOOPBACK else "loopback only"}
    rows = [("web server", f"{site.kind} ({lay.site})"), ("name", site.server_name),
            ("certificate", site.cert + (" (self-signed)" if site.self_signed else "")),
            ("expires", "unreadable" if expires is None else f"{expires:%Y-%m-%d} ({days} days)"),
            ("site password", f"on (user {rest.get('password_user')})" if site.htpasswd else "off"),
            ("answers", answers), ("appliance port", data["direct_port"])]
    emit(as_json, data, "\n".join(f"{k + ':':<16}{v}" for k, v in rows))


@proxy_group.group(name="password")
def password_group() -> None:
    """A password for the whole site (HTTP basic authentication in the web
    server), before anyone reaches the hub's login. /hub/health stays open.

    \b
    Example:
      sudo applctl proxy password set
      sudo applctl proxy password off
    """


@password_group.command(name="set")
@click.option("--user", default="hub", show_default=True, help="the name browsers ask for with it")
@click.option("--stdin", "from_stdin", is_flag=True, help="read the password from standard input")
@json_option
@example("sudo applctl proxy password set\necho 'a long passphrase' | sudo applctl proxy password set --stdin")
@_refusals
def password_set(user: str, from_stdin: bool, as_json: bool) -> None:
    """Turn the site password on (or change it)."""
    need_root("proxy password set")
    htpasswd.check_user(user)
    site, rest = _current()
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Site password", hide_input=True, confirmation_prompt=True)
    entry = htpasswd.line(user, password)  # checks it before anything changes
    lay = _layout(site.kind)
    site.htpasswd = str(htpasswd.HTPASSWD)
    text = _site_text(site, lay)
    with Change(lay, [htpasswd.HTPASSWD]) as change:
        htpasswd.write_entry(entry, lay.group)
        write_site(lay, text)
        change.commit()
    setup_record.save(site, {**rest, "password_user": user})
    emit(as_json, {"password": True, "user": user, "file": str(htpasswd.HTPASSWD)},
         f"the site password is on for https://{site.server_name} (user {user}); /hub/health stays open")


@password_group.command(name="off")
@json_option
@example("sudo applctl proxy password off")
@_refusals
def password_off(as_json: bool) -> None:
    """Turn the site password off."""
    need_root("proxy password off")
    site, rest = _current()
    if site.htpasswd is None:
        emit(as_json, {"password": False, "changed": False}, "the site password is already off; nothing changed")
        return
    lay = _layout(site.kind)
    site.htpasswd = None
    text = _site_text(site, lay)
    with Change(lay, [htpasswd.HTPASSWD]) as change:
        write_site(lay, text)
        htpasswd.HTPASSWD.unlink(missing_ok=True)
        change.commit()
    setup_record.save(site, {**rest, "password_user": None})
    emit(as_json, {"password": False, "changed": True}, f"the site password is off for https://{site.server_name}")
