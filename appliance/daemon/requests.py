"""Validation of what crosses into the root daemon. Pure functions: no I/O but lookups.

Nothing from a request reaches systemd unless it is named and bounded here. The unit
name, the command, the user's uid and the sandboxing are the daemon's own decisions.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from .. import users
from ..config import MAX_GPUS
from ..groups import USERS_GROUP

MAX_REQUEST = 256 * 1024
HUB_OPS = ("spawn", "stop", "status", "gpus")
ROOT_OPS = HUB_OPS + ("list",)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_ARG = re.compile(r"--[A-Za-z][A-Za-z0-9_.-]*(=[^\x00\r\n]{0,1024})?")
# Names a hub must not be able to set in a user's server: they change what code runs.
_ENV_FORBIDDEN = re.compile(r"LD_.*|PYTHONSTARTUP|PYTHONHOME|BASH_ENV|ENV")

_MiB = 1024**2


def _ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class RequestError(ValueError):
    """A refused request: `code` for programs, `field` and message for people."""

    def __init__(self, code: str, message: str, field: str | None = None):
        self.code, self.field = code, field
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "field": self.field, "message": str(self)}


@dataclass
class SpawnSpec:
    user: str
    uid: int
    gid: int
    home: str
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    mem_limit: int | None = None
    cpu_limit: float | None = None
    readonly_paths: list[str] = field(default_factory=list)
    readwrite_paths: list[str] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)
    gpus: int = 0
    gpu_fallback: bool = False  # start CPU-only rather than fail when no GPU is free
    # Filled in by the daemon once GPUs are assigned:
    gpu_uuids: tuple[str, ...] = ()
    gpu_minors: tuple[int, ...] = ()


def _int_in(name: str, lo: int, hi: int):
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise RequestError("invalid", f"{name} must be an integer from {lo} to {hi}, not {v!r}", name)
        return v
    return check


# unit_extra_properties a hub may ask for, each with its bounds (resource controls only).
EXTRA_PROPERTIES = {
    "TasksMax": lambda: _int_in("TasksMax", 16, 1_000_000),
    "CPUWeight": lambda: _int_in("CPUWeight", 1, 10_000),
    "IOWeight": lambda: _int_in("IOWeight", 1, 10_000),
    "MemoryHigh": lambda: _int_in("MemoryHigh", 64 * _MiB, _ram()),
}


def check_op(req: Any, peer_uid: int, hub_uid: int) -> str:
    """The operation, if this peer may ask for it."""
    if not isinstance(req, dict):
        raise RequestError("invalid", "a request is a JSON object")
    op = req.get("op")
    if peer_uid == 0:
        allowed = ROOT_OPS
    elif peer_uid == hub_uid:
        allowed = HUB_OPS
    else:
        raise RequestError("forbidden", f"uid {peer_uid} may not use the appliance daemon")
    if op not in allowed:
        raise RequestError("invalid", f"op must be one of {', '.join(allowed)}, not {op!r}", "op")
    return op


def check_user(req: dict, min_uid: int):
    """The named user's account, if that user may have a server."""
    try:
        pw = users.lookup(req.get("user"), min_uid)
    except users.UserError as e:
        raise RequestError("invalid_user", str(e), "user") from None
    if not users.is_member(pw.pw_name, USERS_GROUP):
        raise RequestError(
            "invalid_user", f"{pw.pw_name} is not a member of {USERS_GROUP} (applctl adduser {pw.pw_name})", "user"
        )
    return pw


def _env(v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or len(v) > 256:
        raise RequestError("invalid", "env must be an object of at most 256 variables", "env")
    total = 0
    for k, val in v.items():
        if not _ENV_NAME.fullmatch(k) or _ENV_FORBIDDEN.fullmatch(k):
            raise RequestError("invalid", f"env: {k[:64]!r} is not an accepted variable name", "env")
        if not isinstance(val, str) or len(val) > 32 * 1024 or any(c in val for c in "\x00\r\n"):
            raise RequestError("invalid", f"env: {k} must be a one-line string of at most 32 KiB", "env")
        total += len(k) + len(val)
    if total > 128 * 1024:
        raise RequestError("invalid", "env is larger than 128 KiB", "env")
    return dict(v)


def _args(v: Any) -> list[str]:
    if not isinstance(v, list) or len(v) > 32:
        raise RequestError("invalid", "args must be a list of at most 32 options", "args")
    for a in v:
        if not isinstance(a, str) or not _ARG.fullmatch(a):
            raise RequestError("invalid", f"args: {str(a)[:64]!r} is not an accepted option (--name or --name=value)", "args")
    return list(v)


def _paths(name: str, v: Any) -> list[str]:
    if not isinstance(v, list) or len(v) > 32:
        raise RequestError("invalid", f"{name} must be a list of at most 32 paths", name)
    for p in v:
        if (not isinstance(p, str) or not p.startswith("/") or len(p) > 4096 or "\x00" in p
                or posixpath.normpath(p) != p):
            raise RequestError("invalid", f"{name}: {str(p)[:64]!r} is not a normalised absolute path", name)
    return list(v)


def check_spawn(req: dict, min_uid: int) -> SpawnSpec:
    known = {"op", "user", "env", "args", "mem_limit", "cpu_limit", "readonly_paths", "readwrite_paths", "extra",
             "gpus", "gpu_fallback"}
    unknown = sorted(set(req) - known)
    if unknown:
        raise RequestError("invalid", f"unknown field {unknown[0]!r}; accepted: {', '.join(sorted(known))}", unknown[0])
    pw = check_user(req, min_uid)
    spec = SpawnSpec(user=pw.pw_name, uid=pw.pw_uid, gid=pw.pw_gid, home=pw.pw_dir)
    spec.env = _env(req.get("env", {}))
    spec.args = _args(req.get("args", []))
    if req.get("mem_limit") is not None:
        spec.mem_limit = _int_in("mem_limit", 64 * _MiB, _ram())(req["mem_limit"])
    if req.get("cpu_limit") is not None:
        c = req["cpu_limit"]
        ncpu = os.cpu_count() or 1
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.01 <= c <= ncpu:
            raise RequestError("invalid", f"cpu_limit must be a number from 0.01 to {ncpu}, not {c!r}", "cpu_limit")
        spec.cpu_limit = float(c)
    spec.readonly_paths = _paths("readonly_paths", req.get("readonly_paths", []))
    spec.readwrite_paths = _paths("readwrite_paths", req.get("readwrite_paths", []))
    spec.gpus = _int_in("gpus", 0, MAX_GPUS)(req.get("gpus", 0))
    fallback = req.get("gpu_fallback", False)
    if not isinstance(fallback, bool):
        raise RequestError("invalid", f"gpu_fallback must be true or false, not {fallback!r}", "gpu_fallback")
    spec.gpu_fallback = fallback
    extra = req.get("extra", {})
    if not isinstance(extra, dict):
        raise RequestError("invalid", "extra must be an object", "extra")
    for k, v in extra.items():
        if k not in EXTRA_PROPERTIES:
            raise RequestError(
                "invalid", f"extra: {str(k)[:64]!r} is not accepted; accepted: {', '.join(EXTRA_PROPERTIES)}", "extra"
            )
        try:
            spec.extra[k] = EXTRA_PROPERTIES[k]()(v)
        except RequestError as e:
            raise RequestError("invalid", f"extra: {e}", "extra") from None
    return spec
