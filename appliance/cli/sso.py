"""`applctl sso setup`: single sign-on in one step. It checks the provider, puts the
client secret in root's file and [auth] + [oidc] in appliance.toml, and prints the
redirect URI to register at the provider.

Root only, not `sudo applctl`: [oidc] decides who may log in as which local account,
so a jupyterhub-admin who could point the hub at a provider of their own could log
in as anyone. Everything is checked before anything is written; if the
configuration cannot be written after all, the secret file is put back as it was.
"""

from __future__ import annotations

import getpass
import os
import stat
import sys
from pathlib import Path

import click

from .. import config, config_edit, files, privilege, root_only
from ..oidc_discovery import SSOError, discover, id_token_keys
from ..revproxy import setup_record
from .common import config_path, load_config
from .output import Failure, emit, example, json_option, need_root, wraps_failure

CALLBACK = "/hub/oauth_callback"  # oauthenticator's callback under the hub's base URL
MAX_SECRET = 4000  # config.read_client_secret reads at most 4096 bytes
_ROOT = (0, 0) if os.getuid() == 0 else None  # the owner; unit tests may run unprivileged
_refusals = wraps_failure((config_edit.EditError,))


@click.group(name="sso")
def sso_group() -> None:
    """Single sign-on through an OpenID Connect provider (Keycloak, Entra ID, ...).

    \b
    Example:
      printf '%s\\n' "$SECRET" | applctl sso setup \\
          --issuer https://login.example.org/realms/lab --client-id jupyterhub
      applctl reload
    """


@sso_group.command()
@click.option("--issuer", required=True, help="the provider's issuer URL, exactly as its discovery document names it")
@click.option("--client-id", required=True, help="the client id the provider gave this hub")
@click.option("--scopes", metavar="LIST", help='scopes to ask for, comma-separated (default "openid,profile,email")')
@click.option("--username-claim", metavar="CLAIM", help="the claim that names the local account "
                                                        "(default preferred_username)")
@click.option("--username-domain", metavar="DOMAIN", help="a username claim NAME@DOMAIN (a UPN) is the local NAME; "
                                                           "other domains are refused")
@click.option("--groups-claim", metavar="CLAIM", help="the claim that lists the person's groups (default groups)")
@click.option("--claims-from", type=click.Choice(["userinfo", "id_token"]),
              help="where the claims come from (default userinfo; id_token: the ID token, its signature checked, "
                   "as Entra ID needs)")
@json_option
@example("printf '%s\\n' \"$SECRET\" | applctl sso setup --issuer https://login.example.org/realms/lab "
         "--client-id jupyterhub\napplctl sso setup --issuer https://sso.example.org/realms/lab --client-id jupyterhub "
         "--scopes openid,profile,groups   # asks for the secret")
@_refusals
def setup(issuer: str, client_id: str, scopes: str | None, username_claim: str | None, username_domain: str | None,
          groups_claim: str | None, claims_from: str | None, as_json: bool) -> None:
    """Turn on single sign-on: check the provider, store the client secret, write
    [auth] type = "oidc" and [oidc] into appliance.toml.

    The client secret is read from standard input (one line), or asked for on a
    terminal without being shown. It goes to [oidc] client_secret_file (root, 0600).
    Nothing is restarted: apply it with `applctl reload`. Root only (a root login,
    not sudo applctl): it decides who may log in, as which local account.
    """
    need_root("sso setup")
    if privilege.sudo_uid() is not None:
        raise Failure("sso setup decides who may log in, as which local account, so only root may run it "
                      "(a root login, not sudo applctl); nothing changed")
    keys = oidc_settings(issuer, client_id, scopes, username_claim, groups_claim,
                         {"--username-domain": username_domain, "--claims-from": claims_from})
    path = config_path()
    secret_file = Path(load_config()["oidc"]["client_secret_file"])

    def edit(doc) -> None:
        config_edit.set_in(doc, ("auth", "type"), "oidc")
        for key, value in keys.items():
            config_edit.set_in(doc, ("oidc", key), value)

    config_edit.change(path, edit, dry_run=True)  # the same check as the write below, before anything
    try:
        doc = discover(issuer)
        if keys.get("claims_from") == "id_token":
            id_token_keys(doc, issuer)
    except SSOError as e:
        raise Failure(f"--issuer: {e}; nothing changed") from None
    check_secret_place(secret_file)
    secret = read_secret()
    before = previous_secret(secret_file)
    write_secret(secret_file, secret)
    try:
        config_edit.change(path, edit)
    except OSError as e:
        restore_secret(secret_file, before)
        raise Failure(f"cannot write {path} ({e.strerror}); nothing changed") from None
    except BaseException:
        restore_secret(secret_file, before)
        raise
    uri, known = redirect_uri()
    cfg = load_config()
    lines = [f"single sign-on through {issuer} (client id {client_id}) is set in {path}",
             f"the client secret is in {secret_file} (root, mode 0600)",
             f"register this redirect URI at the provider: {uri}"]
    if not known:
        lines.append("  (HOST: the name people reach this hub by; `applctl proxy setup` sets one up with TLS)")
    if cfg["hub"]["mode"] != "accounts":
        lines.append('hub.mode is not "accounts": single sign-on takes effect when it is')
    lines.append("apply it with: sudo applctl reload")
    emit(as_json, {"issuer": issuer, "client_id": client_id, "file": str(path), "client_secret_file":
                   str(secret_file), "redirect_uri": uri, "host_known": known, "reloaded": False},
         "\n".join(lines))


def oidc_settings(issuer: str, client_id: str, scopes: str | None, username_claim: str | None,
                  groups_claim: str | None, more: dict[str, str | None] | None = None) -> dict:
    """The [oidc] keys to write, each checked by its own schema check (config.py),
    the error naming the option. MORE: other options given as they are, --key-name
    for [oidc] key_name."""
    given = {"issuer": ("--issuer", issuer, issuer), "client_id": ("--client-id", client_id, client_id)}
    for option, value in (more or {}).items():
        if value is not None:
            given[option[2:].replace("-", "_")] = (option, value, value)
    if scopes is not None:
        given["scopes"] = ("--scopes", scopes, [s.strip() for s in scopes.split(",") if s.strip()])
    if username_claim is not None:
        given["username_claim"] = ("--username-claim", username_claim, username_claim)
    if groups_claim is not None:
        given["groups_claim"] = ("--groups-claim", groups_claim, groups_claim)
    out = {}
    for key, (option, typed, value) in given.items():
        field = config.SCHEMA["oidc"][key]
        if not value:  # "" is the schema's "none"; setup needs a value
            raise Failure(f"{option} is empty: give {field.doc}; nothing changed")
        try:
            out[key] = field.check(value)
        except ValueError as e:
            raise Failure(f"{option}: {typed[:100]!r} is not accepted: {e}; nothing changed") from None
    return out


def read_secret() -> str:
    """The client secret: one line on standard input, or asked for without echo on a
    terminal (never a silent wait for a line nobody knows to type)."""
    if sys.stdin is None:
        raise Failure("no client secret: give it on standard input (one line); nothing changed")
    if sys.stdin.isatty():
        text = getpass.getpass("client secret (not shown): ")
    else:
        text = sys.stdin.read(MAX_SECRET + 2)
    lines = text.splitlines()
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise Failure("no client secret on standard input: give the secret the provider issued, on one line; "
                      "nothing changed")
    if len(lines) > 1 and any(line.strip() for line in lines[1:]):
        raise Failure("the client secret must be one line, and standard input has more; nothing changed")
    if len(secret) > MAX_SECRET or not all(0x21 <= ord(c) <= 0x7e for c in secret):
        raise Failure(f"the client secret is not accepted: 1 to {MAX_SECRET} printable ASCII characters, no spaces "
                      "(as providers issue them); nothing changed")
    return secret


def check_secret_place(path: Path) -> None:
    """Root writes here, so nobody else may change a directory above the file: a
    link or a rename there would send the secret elsewhere."""
    try:
        found = root_only.replaceable((str(path), os.path.realpath(path)), itself=False)
    except OSError as e:
        raise Failure(f"[oidc] client_secret_file = {str(path)!r}: cannot check {e.filename or path} "
                      f"({e.strerror}); nothing changed") from None
    if found:
        raise Failure(f"[oidc] client_secret_file = {str(path)!r}: {found[0]} above it is {found[1]}; it must be "
                      f"{config.SECRET_FILE_RULE}; nothing changed")
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise Failure(f"[oidc] client_secret_file = {str(path)!r} is not a regular file (a link or other); remove "
                      "it, or set another path; nothing changed")


def previous_secret(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read()


def write_secret(path: Path, secret: str) -> None:
    """Atomically, root's and 0600 before it holds anything (files.write_atomic)."""
    try:
        files.write_atomic(path, secret + "\n", 0o600, _ROOT)
    except OSError as e:
        raise Failure(f"cannot write {path} ({e.strerror}); nothing changed") from None


def restore_secret(path: Path, before: bytes | None) -> None:
    if before is None:
        path.unlink(missing_ok=True)
    else:
        files.write_atomic(path, before, 0o600, _ROOT)


def redirect_uri() -> tuple[str, bool]:
    """(the redirect URI, whether its host is known). The public name is the one
    `applctl proxy setup` put TLS on; without it, HOST is for the administrator."""
    return setup_record.public_url(CALLBACK)
