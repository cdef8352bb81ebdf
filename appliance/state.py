"""The appliance's secrets: created once, 0600, in two directories.

The hub's own (cookie secret, applctl's service token) live in /var/lib/jupyterhub,
owned by the hub user. The proxy token and the key of single sign-on's auth state
live in root's SECRETS_DIR: systemd reads them for the units (LoadCredential=), and
PID 1 follows links, so it must never read from a directory the hub can write.

The hub's directory belongs to uid `jupyterhub`, so anything in it may have been planted
by a compromised hub. Root works there only through a descriptor of the directory:
entries are looked at with lstat, opened with O_NOFOLLOW, checked after opening
(a regular file with one link, of the expected owner), created with O_EXCL, and
changed through the open descriptor. A link or a stranger's file in place of a
secret is never followed: its name is removed and a fresh secret made.
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import stat
import sys
from pathlib import Path

from .groups import HUB_USER, SECRETS_DIR, STATE_DIR

COOKIE_SECRET = "jupyterhub_cookie_secret"
PROXY_TOKEN = "proxy_token"
# JupyterHub's key for auth_state (single sign-on's tokens, encrypted in the hub's
# database): root's file, so the database alone, as a backup or a copy holds it,
# gives away no person's refresh token.
CRYPT_KEY = "jupyterhub_crypt_key"
CRYPT_CREDENTIAL = "crypt-key"  # its name as systemd hands it to the hub (LoadCredential=)
# The API token of the hub service `applctl` (configurer.register_applctl_service).
APPLCTL_TOKEN = "applctl_token"
# In STATE_DIR, the hub's; in SECRETS_DIR, root's (units get them as credentials).
SECRETS = (COOKIE_SECRET, APPLCTL_TOKEN)
ROOT_SECRETS = (PROXY_TOKEN, CRYPT_KEY)
# Replaced on every upgrade and by `applctl doctor --fix`: a token that leaked once
# stops working then. The cookie secret stays: replacing it logs everybody out; so
# does the crypt key, whose loss leaves every single sign-on session to a new login.
ROTATED = (PROXY_TOKEN, APPLCTL_TOKEN)
MAX_SECRET = 4096


class StateError(OSError):
    """A state file that is not what it must be; the message says what and how to fix it."""


def _open_dir(state_dir: str | Path) -> int:
    try:
        return os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        raise StateError(e.errno, f"{state_dir} is not a directory one may work in ({e.strerror}); "
                                  "it must be a real directory, not a link") from None


def _lstat(dfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _write_new(dfd: int, name: str, ids: tuple[int, int] | None, text: str | None = None) -> None:
    """A fresh secret (or `text`) under `name`, whole or not at all."""
    tmp = f".{name}.new"
    if _lstat(dfd, tmp) is not None:
        os.unlink(tmp, dir_fd=dfd)  # unlink never follows a link
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
    try:
        os.write(fd, ((text if text is not None else secrets.token_hex(32)) + "\n").encode())
        os.fsync(fd)
        if ids:
            os.fchown(fd, *ids)
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)


def _fix_existing(dfd: int, name: str, ids: tuple[int, int] | None, allowed: set[int]) -> bool:
    """Owner and mode of an existing secret, through its descriptor; False when what
    is there is not a plain file of ours (the caller then replaces it)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    except OSError:
        return False  # a link (ELOOP) or gone meanwhile
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid not in allowed:
            return False
        if ids:
            os.fchown(fd, *ids)
        os.fchmod(fd, 0o600)
        return True
    finally:
        os.close(fd)


def ensure_all(rotate: tuple[str, ...] = ()) -> list[str]:
    """Every secret of the appliance: the hub's, and root's for the units' credentials."""
    made = ensure_secrets(rotate=rotate)
    os.makedirs(os.path.dirname(SECRETS_DIR), 0o755, exist_ok=True)
    made += ensure_secrets(SECRETS_DIR, owner=None, rotate=rotate, names=ROOT_SECRETS)
    _drop_old_proxy_token()
    return made


def _drop_old_proxy_token(state_dir: str = STATE_DIR) -> None:
    """Up to 0.2.x, the proxy token lived in the hub's directory; its name goes (unlink
    never follows a link). Upgrades rotate the token anyway."""
    dfd = _open_dir(state_dir)
    try:
        st = _lstat(dfd, PROXY_TOKEN)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            os.unlink(PROXY_TOKEN, dir_fd=dfd)
    finally:
        os.close(dfd)


def hand_back_proxy_token(state_dir: str = STATE_DIR, owner: str = HUB_USER) -> None:
    """Before a downgrade to a release that reads the proxy token from the hub's
    directory: the running proxy's token, put there (a link there is replaced, never
    followed). 0.1.0 restarts the hub but not the proxy, so both must agree."""
    token = read_proxy_token()
    pw = pwd.getpwnam(owner)
    dfd = _open_dir(state_dir)
    try:
        _write_new(dfd, PROXY_TOKEN, (pw.pw_uid, pw.pw_gid), token)
    finally:
        os.close(dfd)


def ensure_secrets(state_dir: str = STATE_DIR, owner: str | None = HUB_USER,
                   rotate: tuple[str, ...] = (), names: tuple[str, ...] = SECRETS) -> list[str]:
    """Create the missing secrets `names` in `state_dir` (and those named in `rotate`),
    owned by `owner` (None: whoever runs this); never replace a good one otherwise
    (that would log everybody out). Returns what was (re)created."""
    ids = None
    if owner is not None:
        pw = pwd.getpwnam(owner)
        ids = (pw.pw_uid, pw.pw_gid)
    allowed = {0, os.geteuid()} | ({ids[0]} if ids else set())
    try:
        os.mkdir(state_dir, 0o700)
    except FileExistsError:
        pass
    dfd = _open_dir(state_dir)
    created = []
    try:
        if ids:
            os.fchown(dfd, *ids)
        os.fchmod(dfd, 0o700)
        for name in names:
            st = _lstat(dfd, name)
            if st is not None and name not in rotate and not _fix_existing(dfd, name, ids, allowed):
                print(f"jupyterhub-appliance: {state_dir}/{name} was not a private file of {owner or 'root'} "
                      f"(a link, a file with other names, or another's file); replaced it without following it",
                      file=sys.stderr)
                try:
                    os.unlink(name, dir_fd=dfd)
                except IsADirectoryError:  # a directory: moved aside, whole, for a person to look at
                    os.rename(name, f".{name}.not-a-secret.{secrets.token_hex(4)}", src_dir_fd=dfd, dst_dir_fd=dfd)
                st = None
            if st is None or name in rotate:
                _write_new(dfd, name, ids)
                created.append(f"{state_dir}/{name}")
    finally:
        os.close(dfd)
    return created


def read_secret(path: str | Path, owners: tuple[int, ...] | None = None) -> str:
    """A secret's text, never through a link. With `owners` (as root does), the file
    must also be a plain file with one link owned by one of them."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == 40:  # ELOOP: the last component is a link
            raise StateError(e.errno, f"{path} is a link; refusing to follow it "
                                      "(repair with: sudo applctl doctor --fix)") from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (owners is not None and (st.st_nlink != 1 or st.st_uid not in owners)):
            raise StateError(1, f"{path} is not a private file of the hub (type, owner or links are wrong); "
                                "refusing to read it (repair with: sudo applctl doctor --fix)")
        return f.read(MAX_SECRET).decode("utf-8", "replace").strip()


# The hub's admin service for applctl, whose token is APPLCTL_TOKEN.
APPLCTL_SERVICE = "applctl"


def proxy_token(state_dir: str = STATE_DIR) -> str:
    """The proxy token as the hub and the proxy read it: systemd's LoadCredential=
    hands each unit a private copy of root's file; outside systemd (tests), a
    directory holding the file."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    path = Path(creds) / "proxy-token" if creds else Path(state_dir) / PROXY_TOKEN
    return read_secret(path)


def read_proxy_token(secrets_dir: str | Path = SECRETS_DIR) -> str:
    """Root's reading of the proxy token (applctl doctor)."""
    return read_secret(Path(secrets_dir) / PROXY_TOKEN, owners=(0,))


def hub_owners() -> tuple[int, ...]:
    """Who may own the hub's secrets when root reads them: the hub user and root."""
    try:
        return (pwd.getpwnam(HUB_USER).pw_uid, 0)
    except KeyError:
        return (0,)


def main(argv: list[str] | None = None) -> int:
    """Run by the packages' maintainer scripts and by `applctl doctor --fix`."""
    ap = argparse.ArgumentParser(prog="python -m appliance.state",
                                 description="create the hub's missing secrets and fix their owners and modes")
    ap.add_argument("--rotate-tokens", action="store_true",
                    help="also replace the proxy token and the applctl service token (done on every upgrade and by "
                         "applctl doctor --fix; the proxy and the hub must restart after it)")
    ap.add_argument("--downgrade", action="store_true",
                    help="before a downgrade to 0.2.0 or older: put the proxy token where those read it")
    args = ap.parse_args(argv)
    if args.downgrade:
        try:
            hand_back_proxy_token()
        except (OSError, KeyError) as e:
            print(f"jupyterhub-appliance: cannot hand the proxy token back to {STATE_DIR}: {e}", file=sys.stderr)
            return 1
        return 0
    try:
        made = ensure_all(rotate=ROTATED if args.rotate_tokens else ())
    except (OSError, KeyError) as e:
        print(f"jupyterhub-appliance: cannot set up {STATE_DIR} and {SECRETS_DIR}: {e}", file=sys.stderr)
        return 1
    for p in made:
        print(f"created {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
