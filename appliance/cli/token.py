"""`applctl token`: JupyterHub API tokens for scripts and programmatic access."""

from __future__ import annotations

import re
import subprocess
import time
from urllib.parse import quote

import click

from .. import privilege
from ..hub.configurer import APPLCTL_SERVICE
from ..state import APPLCTL_TOKEN, ensure_secrets
from ..tools import tool
from .common import account, check_name, has_access, load_config, refuse_privileged
from .completion import access_names
from .host import HUB
from .hub import Hub, HubDown, HubError
from .output import Failure, emit, example, json_option, need_root, note

_SCOPE = re.compile(r"[a-z][a-z_:-]*(![a-z_]+(=[A-Za-z0-9_.@-]+)?)?")
_DURATION = re.compile(r"([0-9]+)\s*([smhdw]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_SECONDS = 10 * 365 * 86400


def parse_scopes(given: tuple[str, ...]) -> list[str] | None:
    """--scopes read:users,servers!user=alice (repeatable) -> a list; None = default."""
    scopes = [s for arg in given for s in re.split(r"[,\s]+", arg) if s]
    for s in scopes:
        if not _SCOPE.fullmatch(s):
            raise Failure(f"--scopes: {s[:60]!r} is not a JupyterHub scope; scopes look like read:users, "
                          "servers or read:users!user=alice")
    return scopes or None


DEFAULT_EXPIRY = 30 * 86400


def parse_duration(text: str | None, no_expiry: bool = False) -> int | None:
    """'90m' -> 5400 seconds; default 30 days; None (no expiry) only for root itself:
    a token that never expires outlives the admin rights of whoever asked for it."""
    if no_expiry or (text is not None and text.strip().lower() == "never"):
        if privilege.sudo_uid() is not None:
            raise Failure("a token without expiry is for root only (sudo -i), not sudo applctl; "
                          "use --expires-in, e.g. 90d")
        return None
    if text is None:
        return DEFAULT_EXPIRY
    m = _DURATION.fullmatch(text.strip().lower())
    seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)] if m else 0
    if not 0 < seconds <= MAX_SECONDS:
        raise Failure(f"--expires-in: {text[:40]!r} is not accepted: a duration such as 3600, 90m, 12h, 30d "
                      "or 2w (at most 10 years), or never")
    return seconds


@click.command()
@click.argument("name", required=False, shell_complete=access_names)
@click.option("--service", is_flag=True, help=f"print the token of the appliance's admin service ({APPLCTL_SERVICE})")
@click.option("--scopes", multiple=True, metavar="SCOPES",
              help="what the token may do: JupyterHub scopes, comma-separated (default: all NAME may do)")
@click.option("--expires-in", metavar="DURATION", help="e.g. 3600, 90m, 12h, 30d (default: 30d)")
@click.option("--no-expiry", is_flag=True, help="a token that never expires (root only, not under sudo)")
@click.option("--rotate-service", is_flag=True,
              help=f"replace the {APPLCTL_SERVICE} service's token and restart the hub; the old one stops working")
@click.option("--note", "note_", default="issued by applctl", show_default=True, help="shown in the hub's token list")
@json_option
@example("sudo applctl token alice\n"
         "sudo applctl token --scopes read:users,list:users --expires-in 90d alice\n"
         "sudo applctl token --rotate-service\n"
         'curl -H "Authorization: token $(sudo applctl token alice)" http://localhost:8000/hub/api/user')
def token(name: str | None, service: bool, scopes: tuple[str, ...], expires_in: str | None, no_expiry: bool,
          rotate_service: bool, note_: str, as_json: bool) -> None:
    """Issue a JupyterHub API token for the user NAME, or show the admin service's.

    The token alone goes to stdout, its details to stderr. NAME must have access
    (applctl adduser); a token cannot do more than NAME may; it expires in 30
    days unless told otherwise. The admin service's token has every admin right:
    keep it for root's scripts; it is replaced on every upgrade and by
    --rotate-service.
    """
    if sum((bool(name), service, rotate_service)) != 1:
        raise click.UsageError("give a user NAME, --service or --rotate-service")
    if (service or rotate_service) and (scopes or expires_in or no_expiry):
        raise Failure("--service and --rotate-service concern the admin service's token (all admin rights); "
                      "for narrower or expiring access, issue a token for an admin user with --scopes")
    if name:
        check_name(name)
    need_root("token")
    if rotate_service:
        _rotate_service(as_json)
        return
    chosen, seconds = parse_scopes(scopes), parse_duration(expires_in, no_expiry)
    hub_cfg = load_config()
    hub = Hub(hub_cfg)
    if service:
        try:
            secret = hub.token()
        except HubError as e:
            raise Failure(str(e)) from None
        emit(as_json, {"service": APPLCTL_SERVICE, "token": secret, "scopes": ["admin"], "expires_at": None}, secret)
        if not as_json:
            note(f"the {APPLCTL_SERVICE} service's token: all admin rights, never expires")
        return
    account(name)
    refuse_privileged(name, hub_cfg, "issue a token for")
    if not has_access(name):
        raise Failure(f"{name} has no access to JupyterHub; grant it first: applctl adduser {name}")
    try:
        if hub.user(name) is None:  # never logged in: the hub needs its record first
            hub.call("POST", f"/users/{quote(name)}")
        body = {"note": note_, "expires_in": seconds, "scopes": chosen}
        r = hub.call("POST", f"/users/{quote(name)}/tokens", body)
    except HubDown as e:
        raise Failure(f"{e}; start it with: sudo systemctl start jupyterhub") from None
    except HubError as e:
        raise Failure(f"the hub refused the token: {e}") from None
    data = {"user": name, "token": r["token"], "id": r.get("id"), "scopes": r.get("scopes"),
            "expires_at": r.get("expires_at"), "note": r.get("note")}
    emit(as_json, data, r["token"])
    if not as_json:
        what = ", ".join(data["scopes"] or []) if chosen else f"all that {name} may do"
        note(f"token {data['id']} for {name} ({what}; expires {data['expires_at'] or 'never'}); "
             "use it as the header: Authorization: token TOKEN")


def _rotate_service(as_json: bool) -> None:
    try:
        ensure_secrets(rotate=(APPLCTL_TOKEN,))
    except (OSError, KeyError) as e:
        raise Failure(f"cannot replace the service token: {e}") from None
    # The hub loads service tokens when it starts and then deletes the old one (hub/revoke.py).
    subprocess.run([tool("systemctl"), "try-restart", HUB], check=False)
    hub = Hub(load_config())
    deadline = time.monotonic() + 60
    while hub.version(timeout=2) is None and time.monotonic() < deadline:
        time.sleep(0.3)
    emit(as_json, {"service": APPLCTL_SERVICE, "rotated": True},
         f"the {APPLCTL_SERVICE} service has a new token; the old one no longer works "
         "(read the new one with: applctl token --service)")
