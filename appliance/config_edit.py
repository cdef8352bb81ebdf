"""Changing appliance.toml as a careful person would by hand.

tomlkit keeps the file's comments and layout; a new key goes right under the
commented-out line that documents it. Every change is checked against the schema
(config.loads) before anything is written. A write is atomic (a temporary file in
the same directory, fsync, rename) and happens under an exclusive lock on the
directory, so two applctl runs never lose each other's change and a reader never
sees half a file. The lock is on the directory because the rename replaces the
file's inode.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
import time
import tomllib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import InlineTable, Table

from . import config, files, privilege

_PART = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NOT_TOML = object()


class EditError(ValueError):
    """A change that was refused, worded for an administrator; nothing was written."""


# --- keys and values ---------------------------------------------------------------

def parse_key(key: str) -> tuple[str, ...]:
    """'gpu.quota_users.alice' -> ('gpu', 'quota_users', 'alice')."""
    parts = tuple(key.split("."))
    if not 1 <= len(parts) <= 4 or not all(_PART.fullmatch(p) for p in parts):
        shown = key if len(key) <= 60 else key[:60] + "..."
        raise EditError(f"{shown!r} is not a configuration key: keys look like SECTION.KEY, e.g. hub.port "
                        "(all of them: applctl config show --effective)")
    return parts


def field_of(parts: tuple[str, ...]) -> config.Field | None:
    if len(parts) == 2:
        return config.SCHEMA.get(parts[0], {}).get(parts[1])
    if len(parts) == 3 and parts[0] == "profiles":
        return getattr(config, "PROFILE_FIELDS", {}).get(parts[2])
    if len(parts) == 3 and parts[0] == "apps":
        return config.APP_FIELDS.get(parts[2])
    return None


def _toml_literal(text: str) -> Any:
    try:
        data = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return _NOT_TOML
    return data["v"] if list(data) == ["v"] else _NOT_TOML


def parse_value(parts: tuple[str, ...], text: str) -> Any:
    """A VALUE from the command line. It is read as TOML (8000, true, 2.5, "text",
    {alice = 2}), except for keys whose values are text, and a word TOML cannot read
    is taken as text; the schema check then says what is accepted."""
    literal = _toml_literal(text)
    field = field_of(parts)
    if field is None or field.check is None:  # no check of its own: TOML, else text
        return text if literal is _NOT_TOML else literal
    # Typed by what the key's check accepts, not by its default's type: total_cpu is
    # "auto" by default and also takes 1.5; default_url is text even when it is 8000.
    for value in ([literal] if literal is not _NOT_TOML else []) + [text]:
        try:
            field.check(value)
        except ValueError:
            continue
        return value
    # Neither passes: the check's refusal is about the value as typed for a text
    # key, as TOML reads it for others.
    return text if literal is _NOT_TOML or isinstance(field.default, str) else literal


def show_value(value: Any, quote: bool = True) -> str:
    """A value as one would write it in the file; quote=False prints text as-is
    (for `config get` in scripts)."""
    if isinstance(value, str) and not quote:
        return value
    return (_inline(value) if isinstance(value, dict) else tomlkit.item(value)).as_string()


def _inline(value: dict) -> Any:
    t = tomlkit.inline_table()
    t.update(value)
    return t


# --- the document ------------------------------------------------------------------

def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as e:
        raise EditError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None


def parse_doc(text: str, path: Path) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except TOMLKitError as e:
        raise EditError(f"{path} is not valid TOML ({e}); fix it with: applctl config edit") from None


def check(text: str, path: Path) -> config.Config:
    try:
        return config.loads(text, path)
    except config.ConfigError as e:
        raise EditError(f"{e}; the file is unchanged") from None


# A jupyterhub-admin under sudo may change an app's title, icon and timeout, not what
# it runs: its command runs in every user's server, as that user.
APP_ROOT_ONLY = ("command", "environment", "enabled")
APP_ROOT_ONLY_REASON = "runs its command in every user's server, as that user"


def check_change(old: str, new: str, path: Path) -> config.Config:
    """`new` must be valid, and (under sudo) must not open a way to root, show anonymous
    visitors what they must not see, or change a root-only key."""
    cfg = check(new, path)
    try:
        before = config.loads(old, path)
    except config.ConfigError:
        before = config.validate({}, path)  # a broken file is judged against the defaults
    try:
        privilege.check_config_change(before["daemon"], cfg["daemon"])
        if cfg["ephemeral"]["shared_dir"] != before["ephemeral"]["shared_dir"]:
            privilege.check_shared_dir(cfg["ephemeral"]["shared_dir"])
    except privilege.PrivilegeError as e:
        raise EditError(f"{e}; the file is unchanged") from None
    if privilege.sudo_uid() is not None:  # set, unset, edit and adduser --gpus all come here
        for section, key in config.root_only_keys():
            if cfg[section][key] != before[section][key]:
                raise EditError(f"{section}.{key} {config.SCHEMA[section][key].root_only_reason}, so only root "
                                f"may change it (a root login, not sudo applctl); it stays "
                                f"{before[section][key]!r}; the file is unchanged")
        changed = {n for n in {*cfg["apps"], *before["apps"]}
                   if {k: v for k, v in cfg["apps"].get(n, {}).items() if k in APP_ROOT_ONLY}
                   != {k: v for k, v in before["apps"].get(n, {}).items() if k in APP_ROOT_ONLY}}
        if changed:
            name = sorted(changed)[0]
            raise EditError(f"apps.{name} {APP_ROOT_ONLY_REASON}, so only root may add, remove or change "
                            f"its {', '.join(APP_ROOT_ONLY)} (a root login, not sudo applctl); "
                            "the file is unchanged")
    return cfg


def set_in(doc: tomlkit.TOMLDocument, parts: tuple[str, ...], value: Any) -> None:
    if len(parts) == 1:
        raise EditError(f"{parts[0]} is a section; set one of its keys, e.g. {_example(parts[0])}")
    parent: Any = None
    container: Any = doc
    for depth, part in enumerate(parts[:-1]):
        if part not in container:
            _insert(container, part, _new_table(parts[0], depth))
        parent, container = container, container[part]
        if not isinstance(container, dict):
            raise EditError(f"{'.'.join(parts[:depth + 1])} is a value, not a table: "
                            f"set it with applctl config set {'.'.join(parts[:depth + 1])} VALUE")
    key = parts[-1]
    item = _inline(value) if isinstance(value, dict) else value
    if isinstance(container, InlineTable):
        # tomlkit spaces entries added inside { } unevenly: write the table anew.
        parent[parts[-2]] = _inline({**container, key: value})
    elif key in container:
        container[key] = item  # keeps its place and its trailing comment
    else:
        _insert(container, key, item)


def _new_table(section: str, depth: int) -> Any:
    """A section is a [table]; a table inside a section is written inline, as the
    shipped file documents it (quota_users = { alice = 2 }); a section of tables
    such as [profiles.NAME] gets one [section.NAME] table each."""
    if section not in config.SCHEMA:
        return tomlkit.table(is_super_table=depth == 0)
    return tomlkit.table() if depth == 0 else tomlkit.inline_table()


def _insert(container: Any, key: str, item: Any) -> None:
    """Right under a `# key = ...` comment of the same table, else at its end."""
    if isinstance(container, Table):
        pattern = re.compile(rf"#\s*{re.escape(key)}\s*=")
        body = container.value.body
        for i, (k, it) in enumerate(body):
            if k is None and pattern.match(it.as_string().strip()) and i + 1 < len(body):
                container.value._insert_at(i + 1, key, item)  # tomlkit has no public insert
                return
    container[key] = item


def unset_in(doc: tomlkit.TOMLDocument, parts: tuple[str, ...]) -> bool:
    """Remove a key; False when it was not set."""
    if len(parts) == 1:
        raise EditError(f"{parts[0]} is a section; unset its keys one by one, e.g. {_example(parts[0])}")
    parent: Any = None
    container: Any = doc
    for part in parts[:-1]:
        if not isinstance(container, dict) or part not in container:
            return False
        parent, container = container, container[part]
    if not isinstance(container, dict) or parts[-1] not in container:
        return False
    if isinstance(container, InlineTable):
        # tomlkit leaves stray commas and spaces when deleting inside { }: write it anew.
        parent[parts[-2]] = _inline({k: v for k, v in container.items() if k != parts[-1]})
    else:
        del container[parts[-1]]
    return True


def _example(section: str) -> str:
    keys = list(config.SCHEMA.get(section, {}))
    return f"{section}.{keys[0]}" if keys else "hub.port"


# --- the effective configuration: the file's raw values over the defaults ------------

def effective(text: str, path: Path) -> tuple[dict[str, Any], set[tuple[str, str]]]:
    """(values, keys the file sets). Raw values as written ("4G", not bytes), so
    what is shown can be pasted back into the file."""
    check(text, path)
    data = tomllib.loads(text)
    values: dict[str, Any] = {}
    from_file: set[tuple[str, str]] = set()
    for section, fields in config.SCHEMA.items():
        table = data.get(section, {})
        values[section] = {k: table.get(k, f.default) for k, f in fields.items()}
        from_file.update((section, k) for k in table)
    for section, table in data.items():  # sections with their own rules, e.g. [profiles.NAME]
        if section not in values:
            values[section] = table
            from_file.update((section, k) for k in table)
    for (old, key), new in config.MOVED.items():  # shown where it now lives, as load() reads it
        if (old, key) in from_file and (new, key) not in from_file:
            values[new][key] = values[old][key]
            from_file.add((new, key))
    return values, from_file


def lookup(values: dict[str, Any], parts: tuple[str, ...]) -> Any:
    node: Any = values
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            key = ".".join(parts)
            if depth == 0:
                raise EditError(f"{key} is not a configuration key: known sections are {', '.join(values)}")
            if depth == 1 and parts[0] in config.SCHEMA:
                raise EditError(f"{key} is not a configuration key: known keys in [{parts[0]}] are "
                                + ", ".join(config.SCHEMA[parts[0]]))
            raise EditError(f"{key} is not set")
        node = node[part]
    return node


def render_effective(values: dict[str, Any], from_file: set[tuple[str, str]]) -> str:
    doc = tomlkit.document()
    for section, table in values.items():
        t = tomlkit.table()
        for key, value in table.items():
            t.add(key, _inline(value) if isinstance(value, dict) and section in config.SCHEMA else value)
            if (section, key) not in from_file:
                t.value.item(key).comment("default")
        doc.add(section, t)
    return tomlkit.dumps(doc)


# --- writing -------------------------------------------------------------------------

@contextmanager
def locked(path: Path, timeout: float = 10) -> Iterator[None]:
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise EditError(f"cannot open {path.parent}: {e.strerror}") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EditError(f"another applctl is changing {path}; try again when it is done") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_atomic(path: Path, text: str) -> None:
    """Keeping the file's mode and owner (a new one: 0644, applctl's)."""
    try:
        st = path.stat()
        mode, owner = stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)
    except FileNotFoundError:
        mode, owner = 0o644, None
    files.write_atomic(path, text, mode, owner if os.geteuid() == 0 else None)


def change(path: Path, edit: Callable[[tomlkit.TOMLDocument], Any],
           dry_run: bool = False) -> tuple[str, str, Any]:
    """Apply `edit` to the file under the lock: (old text, new text, edit's result).
    Written only if the result is valid and differs, and not for a dry run."""
    with locked(path):
        old = read_text(path)
        doc = parse_doc(old, path)
        result = edit(doc)
        new = tomlkit.dumps(doc)
        check_change(old, new, path)
        if new != old and not dry_run:
            write_atomic(path, new)
        return old, new, result


def replace(path: Path, new: str, expected_old: str) -> None:
    """For `config edit`: write `new` if valid and if nobody changed the file since
    `expected_old` was read."""
    check_change(expected_old, new, path)
    with locked(path):
        if read_text(path) != expected_old:
            raise EditError(f"{path} was changed by someone else while you were editing")
        write_atomic(path, new)


def set_key(path: Path, key: str, text: str, dry_run: bool = False) -> dict[str, Any]:
    parts = parse_key(key)
    value = parse_value(parts, text)
    old, new, _ = change(path, lambda doc: set_in(doc, parts, value), dry_run)
    return _report(path, parts, old, new)


def unset_key(path: Path, key: str) -> dict[str, Any]:
    parts = parse_key(key)
    old, new, _ = change(path, lambda doc: unset_in(doc, parts))
    return _report(path, parts, old, new)


def _report(path: Path, parts: tuple[str, ...], old: str, new: str) -> dict[str, Any]:
    def value_in(text: str) -> Any:
        try:
            return lookup(effective(text, path)[0], parts)
        except EditError:
            return None
    def in_file(text: str) -> bool:
        try:
            node: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            return False
        for part in parts:
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True
    return {"key": ".".join(parts), "file": str(path), "changed": old != new,
            "previous": value_in(old), "previous_set": in_file(old), "value": value_in(new)}
