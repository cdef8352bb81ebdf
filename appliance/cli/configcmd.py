"""`applctl config`: show, get, set, unset, validate, edit /etc/jupyterhub/appliance.toml."""

from __future__ import annotations

import errno
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from .. import config, config_edit
from ..tools import SAFE_PATH
from .common import config_path
from .completion import config_keys
from .output import Failure, emit, example, json_option, need_root, wraps_failure

EDITORS = ("sensible-editor", "editor", "nano", "vi")
EDITOR_PATH = "/usr/local/sbin:/usr/local/bin:" + SAFE_PATH


# config_edit's refusals are already worded for people.
_edit_error = wraps_failure((config_edit.EditError,))


@click.group(name="config")
def config_group() -> None:
    """The configuration: /etc/jupyterhub/appliance.toml.

    Changes are checked against the schema before anything is written, keep the
    file's comments, and take effect with `applctl reload`.

    \b
    Example:
      sudo applctl config set limits.mem_limit 8G
      sudo applctl reload
    """


@config_group.command()
@click.option("--effective", is_flag=True, help="every setting with its value in effect, defaults included")
@json_option
@example("applctl config show\napplctl config show --effective")
@_edit_error
def show(effective: bool, as_json: bool) -> None:
    """Print the configuration file, or with --effective what is in effect."""
    path = config_path()
    text = config_edit.read_text(path)
    if effective:
        values, from_file = config_edit.effective(text, path)
        emit(as_json, values, config_edit.render_effective(values, from_file).rstrip("\n"))
    else:
        emit(as_json, {"file": str(path), "text": text},
             text.rstrip("\n") or f"# {path} is empty or missing: every setting has its default")


@config_group.command()
@click.argument("key", shell_complete=config_keys)
@json_option
@example("applctl config get hub.port\napplctl config get gpu.quota_users")
@_edit_error
def get(key: str, as_json: bool) -> None:
    """Print the value of KEY in effect (from the file, else the default)."""
    path = config_path()
    values, _ = config_edit.effective(config_edit.read_text(path), path)
    value = config_edit.lookup(values, config_edit.parse_key(key))
    emit(as_json, {"key": key, "value": value}, config_edit.show_value(value, quote=False))


@config_group.command(name="set")
@click.argument("key", shell_complete=config_keys)
@click.argument("value")
@json_option
@example('sudo applctl config set hub.port 8080\nsudo applctl config set limits.mem_limit 8G\n'
         'sudo applctl config set gpu.quota_users.alice 2\nsudo applctl config set gpu.quota_groups "{ml = 2}"')
@_edit_error
def set_(key: str, value: str, as_json: bool) -> None:
    """Set KEY to VALUE in the file, after checking it.

    VALUE is read as TOML (8000, true, 2.5, "text", {alice = 2}); for a key whose
    value is text, and for a word that is not TOML, the text itself.
    """
    need_root("config set")
    r = config_edit.set_key(config_path(), key, value)
    show = config_edit.show_value
    if r["changed"]:
        was = ("not set" if r["previous"] is None else
               show(r["previous"]) + ("" if r["previous_set"] else " by default"))
        human = f"{r['key']} = {show(r['value'])} (was {was}); apply it with: sudo applctl reload"
    else:
        human = f"{r['key']} is already {show(r['value'])}; nothing changed"
    emit(as_json, r, human)


@config_group.command()
@click.argument("key", shell_complete=config_keys)
@json_option
@example("sudo applctl config unset limits.mem_limit\nsudo applctl config unset gpu.quota_users.alice")
@_edit_error
def unset(key: str, as_json: bool) -> None:
    """Remove KEY from the file: its default applies again."""
    need_root("config unset")
    r = config_edit.unset_key(config_path(), key)
    if r["changed"]:
        after = "" if r["value"] is None else f": back to its default {config_edit.show_value(r['value'])}"
        human = f"{r['key']} removed{after}; apply it with: sudo applctl reload"
    else:
        human = f"{r['key']} is not set in {r['file']}; nothing changed"
    emit(as_json, r, human)


@config_group.command()
# click checks nothing of FILE (it would stat it as root under sudo): validate does.
@click.argument("file", required=False, type=click.Path())
@json_option
@example("applctl config validate\napplctl config validate /tmp/new.toml")
def validate(file: str | None, as_json: bool) -> None:
    """Check a configuration file (default: /etc/jupyterhub/appliance.toml).

    Under sudo, FILE is opened as you, not as root, and an error names the key
    but never shows a value from the file.
    """
    caller = sudo_caller()
    if caller is None:
        path = file or str(config_path())
        if file and not os.path.lexists(file):  # the default file may be absent (all defaults); a named one may not
            raise Failure(f"{file}: no such file; give the path of a TOML file to check")
        if file and os.path.isdir(file):
            raise Failure(f"{file}: not a regular file; give the path of a TOML file to check")
        _report(as_json, path, lambda: config.load(path), str)
        return
    # sudo applctl: root reads the appliance's own file only; any other file is
    # read as the person behind sudo, so this is no way to read /etc/shadow.
    own = config_path()
    if not file or _same_file(file, own):
        _report(as_json, str(own), lambda: config.load(own), without_values)
        return
    data = read_as(caller, file)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Failure(f"{file}: not UTF-8 text; give the path of a TOML file to check") from None
    _report(as_json, file, lambda: config.loads(text, file), without_values)


def _report(as_json: bool, path: str, load, message) -> None:
    try:
        cfg = load()
    except config.ConfigError as e:
        if as_json:
            emit(True, {"valid": False, "file": e.path, "key": e.key, "error": message(e)}, "")
            sys.exit(1)
        raise Failure(message(e)) from None
    emit(as_json, {"valid": True, "file": path, "warnings": cfg.warnings, "effective": cfg.as_dict()},
         "\n".join([f"{path}: valid", *cfg.warnings]))


def _same_file(file: str, own: Path) -> bool:
    """FILE names the appliance's own file (then root reads that path, not FILE)."""
    return os.path.realpath(file) == os.path.realpath(own)


def without_values(e: config.ConfigError) -> str:
    """The error in one line: file, key and what is accepted, but nothing the file
    holds (a line of /etc/shadow is no key = value, and must not be shown)."""
    if e.key == "(syntax)":
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e.value))
        where = f" (at line {m[1]}, column {m[2]})" if m else ""
        return f"{e.path}: not valid TOML{where}; give a TOML file such as {config_path()}"
    if e.key == "(file)":
        return f"{e.path}: cannot be read as a UTF-8 text file; give the path of a TOML file to check"
    accepted = e.accepted
    value = e.value if isinstance(e.value, str) else None
    if value and len(value) >= 3 and value in accepted:  # no check words it so; never show it if one does
        accepted = "see the comments in " + str(config_path())
    return f"{e.path}: {e.key} is not accepted: {accepted}"


MAX_CONFIG_BYTES = 1 << 20


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_as(caller: tuple[int, int, str], file: str) -> bytes:
    """FILE's bytes, opened by a child process that is the caller (their uid, gid and
    groups), not root: what they may not read, applctl does not read for them.
    Refuses what is not a regular file (a FIFO would hang, a device never end)."""
    uid, gid, _home = caller
    try:
        groups = os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    except KeyError:
        groups = [gid]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the caller for good, open, send back
        status = 1
        try:
            os.close(r)
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            fd = os.open(file, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                _write_all(w, b"notfile")
            else:
                body = b""
                while len(body) <= MAX_CONFIG_BYTES:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    body += chunk
                _write_all(w, b"toolarge" if len(body) > MAX_CONFIG_BYTES else b"ok:" + body)
            status = 0
        except OSError as e:
            try:
                _write_all(w, f"errno:{e.errno}".encode())
                status = 0
            except OSError:
                pass
        except BaseException:  # noqa: BLE001 - a forked child never returns into applctl
            pass
        finally:
            os._exit(status)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        reply = f.read()
    _, wait_status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(wait_status) != 0 or not reply:
        raise Failure(f"{file}: could not be read as you; give the path of a TOML file you can read")
    if reply.startswith(b"ok:"):
        return reply[3:]
    if reply == b"notfile":
        raise Failure(f"{file}: not a regular file; give the path of a TOML file to check")
    if reply == b"toolarge":
        raise Failure(f"{file}: larger than 1 MiB, which no configuration file is; give the path of a TOML file")
    code = int(reply.split(b":", 1)[1]) if reply.startswith(b"errno:") else 0
    if code == errno.ENOENT:
        raise Failure(f"{file}: no such file; give the path of a TOML file to check")
    if code in (errno.EACCES, errno.EPERM):
        raise Failure(f"{file}: permission denied: under sudo, applctl config validate reads FILE as you "
                      f"(uid {uid}), not as root; give a file you can read, or no FILE for {config_path()}")
    raise Failure(f"{file}: cannot be read ({os.strerror(code) if code else 'unknown error'}); "
                  "give the path of a TOML file to check")


def editor_command() -> list[str]:
    """The editor's argv, its program by full path. A bare name is looked up in the
    system's directories and /usr/local's, never in the caller's PATH (applctl has
    reset it): under sudo the editor runs as the caller anyway, and root without sudo
    may keep its editor in /usr/local/bin."""
    for var in ("SUDO_EDITOR", "VISUAL", "EDITOR"):
        if os.environ.get(var, "").strip():
            argv = shlex.split(os.environ[var])
            if argv and "/" not in argv[0]:
                argv[0] = shutil.which(argv[0], path=EDITOR_PATH) or argv[0]
            return argv
    for name in EDITORS:
        found = shutil.which(name, path=EDITOR_PATH)
        if found:
            return [found]
    raise Failure("no editor found: set EDITOR, e.g. EDITOR=nano applctl config edit")


def sudo_caller() -> tuple[int, int, str] | None:
    """(uid, gid, home) of the person behind `sudo applctl`, or None when root itself
    runs it. Their editor runs as them, as sudoedit does: an editor running as
    root would be a root shell (vi's :!sh) for every member of jupyterhub-admins."""
    uid, gid = os.environ.get("SUDO_UID", ""), os.environ.get("SUDO_GID", "")
    if os.geteuid() != 0 or not uid.isdigit() or not gid.isdigit() or int(uid) == 0:
        return None
    try:
        home = pwd.getpwuid(int(uid)).pw_dir
    except KeyError:
        home = "/"
    return int(uid), int(gid), home


def read_edited(copy: Path, owner: int | None) -> str:
    """The edited copy, refusing a link or another's file put in its place."""
    fd = os.open(copy, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, encoding="utf-8") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or (owner is not None and st.st_uid != owner):
            raise Failure(f"{copy} is no longer the copy applctl made; nothing was saved")
        return f.read()


@config_group.command()
@example("sudo applctl config edit\nsudo EDITOR=nano applctl config edit")
@_edit_error
def edit() -> None:
    """Edit the file in $EDITOR, on a copy; it replaces the file only if valid.

    An invalid edit is never saved: on a terminal you may edit again, otherwise
    your version is kept aside and its path printed.
    """
    need_root("config edit")
    path = config_path()
    original = config_edit.read_text(path)
    argv = editor_command()
    caller = sudo_caller()
    workdir = Path(tempfile.mkdtemp(prefix="applctl-edit-"))
    copy = workdir / path.name
    copy.write_text(original, encoding="utf-8")
    run_as: dict = {}
    if caller:
        uid, gid, home = caller
        os.chown(workdir, uid, gid)
        os.chown(copy, uid, gid)
        run_as = {"user": uid, "group": gid, "extra_groups": [], "env": {**os.environ, "HOME": home}}
    while True:
        try:
            rc = subprocess.call([*argv, str(copy)], **run_as)
        except FileNotFoundError:
            shutil.rmtree(workdir)
            raise Failure(f"the editor {argv[0]} is not installed; set EDITOR to one that is") from None
        if rc != 0:
            shutil.rmtree(workdir)
            raise Failure(f"the editor exited with status {rc}; {path} is unchanged")
        new = read_edited(copy, caller[0] if caller else None)
        if new == original:
            shutil.rmtree(workdir)
            click.echo(f"no changes; {path} is unchanged")
            return
        try:
            config_edit.replace(path, new, original)
        except config_edit.EditError as e:
            click.echo(f"applctl: {e}", err=True)
            if sys.stdin.isatty() and click.confirm("Edit again?", default=True):
                continue
            raise Failure(f"not saved: {path} is unchanged; your version is in {copy}") from None
        shutil.rmtree(workdir)
        click.echo(f"{path} saved; apply it with: sudo applctl reload")
        return
