"""`applctl token`: JupyterHub API tokens for scripts and programmatic access."""

from __future__ import annotations

import pwd
import re
import subprocess
import time
from urllib.parse import quote

import click

from .. import config, privilege
from ..state import APPLCTL_SERVICE, APPLCTL_TOKEN, ensure_secrets
from ..token_notes import issued_note, issuer_of
from ..tools import tool
from .common import account, check_name, has_access, load_config, refuse_privileged
from .completion import access_names
from .host import HUB
from .hub_api import Hub, HubDown, HubError
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
ROOT_NOTE = "issued by root through applctl"
MAX_NOTE = 200


def caller() -> int | None:
    """Who asks: None for root itself, else the uid of the person behind sudo.

    The rule: sudo itself sets SUDO_UID (and SUDO_USER) to the uid of whoever ran it,
    and the sudoers drop-in gives jupyterhub-admins only /usr/bin/applctl, without
    SETENV, so they can neither clear nor forge it (sudo refuses
    `sudo SUDO_UID=0 applctl`). So SUDO_UID of a uid other than 0 means a person
    through sudo, held to a jupyterhub-admin's limits; no SUDO_UID (a root login, a
    unit, cron) or SUDO_UID=0 (a root shell that ran sudo again) means root itself.
    Someone with full sudo who became root with `sudo -i` or `sudo -s` still carries
    their own SUDO_UID and is treated as an admin here: the safe side. As root they
    may drop it (env -u SUDO_UID applctl ..., or su -)."""
    return privilege.sudo_uid()


def issuer(uid: int | None) -> tuple[str, int] | None:
    """(name, uid) to record in the token's note; None for root itself."""
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name, uid
    except KeyError:
        raise Failure(f"you run sudo applctl as uid {uid}, which has no account here; "
                      "a token must name who issued it") from None


def max_seconds_under_sudo(cfg: config.Config) -> int:
    return cfg["tokens"]["max_days_under_sudo"] * 86400


def parse_duration(text: str | None, no_expiry: bool = False, cap: int | None = None) -> int | None:
    """'90m' -> 5400 seconds; default 30 days; None (no expiry) only for root itself:
    a token that never expires outlives the admin rights of whoever asked for it.
    `cap` (seconds): the longest a token may live, for a jupyterhub-admin under sudo."""
    if no_expiry or (text is not None and text.strip().lower() == "never"):
        if privilege.sudo_uid() is not None:
            raise Failure("a token without expiry is for root only (a root login), not sudo applctl; "
                          "use --expires-in, e.g. 30d" + (f" (at most {cap // 86400}d)" if cap else ""))
        return None
    if text is None:
        return DEFAULT_EXPIRY if cap is None else min(DEFAULT_EXPIRY, cap)
    m = _DURATION.fullmatch(text.strip().lower())
    seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)] if m else 0
    if not 0 < seconds <= MAX_SECONDS:
        raise Failure(f"--expires-in: {text[:40]!r} is not accepted: a duration such as 3600, 90m, 12h, 30d "
                      "or 2w (at most 10 years), or never")
    if cap is not None and seconds > cap:
        raise Failure(f"--expires-in: {text[:40]!r} is longer than the {cap // 86400} days a token issued through "
                      f"sudo applctl may live ([tokens] max_days_under_sudo, which only root may change); "
                      f"ask for {cap // 86400}d or less")
    return seconds


def check_note(text: str) -> str:
    if len(text) > MAX_NOTE or not text.isprintable():
        raise Failure(f"--note: {text[:40]!r} is not accepted: one line of at most {MAX_NOTE} printable characters")
    return text.strip()


def token_note(text: str, who: tuple[str, int] | None) -> str:
    """The note the hub keeps with the token: the caller's text, then who issued it
    (always last, where revoke.issuer_of reads it: free text cannot hide it)."""
    mark = issued_note(*who) if who else ROOT_NOTE
    return f"{text}; {mark}" if text else mark


def revoke_issued_by(hub: Hub, name: str, uid: int | None) -> int:
    """Delete every token that NAME (or uid, if the account was renamed) issued
    through sudo applctl, whoever it is for: how many. Raises HubDown or HubError."""
    n = 0
    for user in hub.users():
        try:
            listed = hub.call("GET", f"/users/{quote(user)}/tokens")
        except HubError as e:
            if e.status == 404:  # deleted meanwhile: its tokens went with it
                continue
            raise
        for t in (listed.get("api_tokens", []) if isinstance(listed, dict) else []):
            who = issuer_of(t.get("note"))
            if who and (who[0] == name or who[1] == uid):
                try:
                    hub.call("DELETE", f"/users/{quote(user)}/tokens/{quote(str(t['id']))}")
                    n += 1
                except HubError as e:
                    if e.status != 404:
                        raise
    return n


@click.command()
@click.argument("name", required=False, shell_complete=access_names)
@click.option("--service", is_flag=True, help=f"print the token of the appliance's admin service ({APPLCTL_SERVICE})")
@click.option("--scopes", multiple=True, metavar="SCOPES",
              help="what the token may do: JupyterHub scopes, comma-separated (default: all NAME may do)")
@click.option("--expires-in", metavar="DURATION", help="e.g. 3600, 90m, 12h, 30d (default: 30d)")
@click.option("--no-expiry", is_flag=True, help="a token that never expires (root only, not under sudo)")
@click.option("--rotate-service", is_flag=True,
              help=f"replace the {APPLCTL_SERVICE} service's token and restart the hub; the old one stops working")
@click.option("--note", "note_", default="", metavar="TEXT",
              help="shown in the hub's token list, before who issued the token (always recorded)")
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

    Under sudo (a jupyterhub-admin), --service and --no-expiry are refused and a
    token lives at most [tokens] max_days_under_sudo days (90 unless root sets
    it); the token's note names its issuer, and `applctl admin remove` revokes
    every token that admin issued.
    """
    if sum((bool(name), service, rotate_service)) != 1:
        raise click.UsageError("give a user NAME, --service or --rotate-service")
    if (service or rotate_service) and (scopes or expires_in or no_expiry):
        raise Failure("--service and --rotate-service concern the admin service's token (all admin rights); "
                      "for narrower or expiring access, issue a token for an admin user with --scopes")
    if name:
        check_name(name)
    need_root("token")
    who = caller()
    if service and who is not None:
        raise Failure("--service: the applctl service's token has every admin right and never expires, so it is "
                      "for root only (a root login), not sudo applctl; issue a user's token instead: "
                      "sudo applctl token NAME")
    if rotate_service:
        _rotate_service(as_json)
        return
    hub_cfg = load_config()
    chosen = parse_scopes(scopes)
    seconds = parse_duration(expires_in, no_expiry, max_seconds_under_sudo(hub_cfg) if who is not None else None)
    text = check_note(note_)
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
    recorded = token_note(text, issuer(who))
    try:
        if hub.user(name) is None:  # never logged in: the hub needs its record first
            hub.call("POST", f"/users/{quote(name)}")
        body = {"note": recorded, "expires_in": seconds, "scopes": chosen}
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
        note(f"token {data['id']} for {name} ({what}; expires {data['expires_at'] or 'never'}; "
             f"{data['note']}); use it as the header: Authorization: token TOKEN")


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
