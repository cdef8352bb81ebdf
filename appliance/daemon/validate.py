"""Validation of what crosses into the root daemon. Pure functions: no I/O but lookups.

Nothing from a request reaches systemd unless it is named and bounded here. The unit
name, the command, the user's uid and the sandboxing are the daemon's own decisions.
"""

from __future__ import annotations

import os
import posixpath
import pwd
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .. import ephemeral, limits, protocol, root_only, users
from ..config import MAX_GPUS, Config, int_in, number_in, sso_in_use
from ..gpu.allocator import QuotaError, quota_for
from ..gpu.inventory import GPU
from ..groups import USERS_GROUP
from ..protocol import OLD_FALLBACK, OPS, SPAWN_FIELDS, RequestError

_MiB = 1024**2


@dataclass
class SpawnSpec:
    user: str
    uid: int
    gid: int
    home: str
    env: dict[str, str] = field(default_factory=dict)
    options: dict[str, bool | int] = field(default_factory=dict)  # protocol.SERVER_OPTIONS
    mem_limit: int | None = None
    cpu_limit: float | None = None
    readonly_paths: list[str] = field(default_factory=list)
    readwrite_paths: list[str] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)
    gpus: int = 0
    cpu_fallback: bool = False  # start on CPU if no GPU is free, rather than fail
    profile: str | None = None  # a [profiles.NAME] of appliance.toml
    groups: list[str] = field(default_factory=list)  # the user's, for the quota and [limits]
    tasks_max: int | None = None  # from [limits], set by the daemon
    # The server's TCP port, from JUPYTERHUB_SERVICE_URL, which its socket unit holds
    # for it (units.socket_properties); None: it gets none.
    port: int | None = None
    # Ephemeral mode: a visitor's server, run as a transient uid (DynamicUser=)
    visitor: bool = False
    shared_dir: str | None = None  # [ephemeral] shared_dir, read-only at ~/shared
    network: str = "loopback"  # [ephemeral] network: what a visitor's server may reach
    visible_paths: list[str] = field(default_factory=list)  # [ephemeral] visible_paths, read-only
    # [ephemeral] content_hosts (none with network "internet", which reaches them anyway)
    # and what the daemon resolved them to at this spawn: name or address -> addresses.
    content_hosts: list[str] = field(default_factory=list)
    content: dict[str, list[str]] = field(default_factory=dict)
    hosts_file: str | None = None  # the server's /etc/hosts, pinning content hosts' names
    # Filled in by the daemon once GPUs are assigned:
    gpu_uuids: tuple[str, ...] = ()
    gpu_devices: tuple[GPU, ...] = ()
    device_group: str = ""  # [gpu] device_group, for a server that holds GPUs


def _int_in(name: str, lo: int, hi: int):
    def check(v: Any) -> int:
        try:
            return int_in(v, lo, hi)
        except ValueError as e:
            raise RequestError("invalid", f"{name} must be {e}, not {str(v)[:40]!r}", name) from None
    return check


# unit_extra_properties a hub may ask for, each with its bounds (resource controls only).
EXTRA_PROPERTIES = {
    "TasksMax": lambda: _int_in("TasksMax", 16, 1_000_000),
    "CPUWeight": lambda: _int_in("CPUWeight", 1, 10_000),
    "IOWeight": lambda: _int_in("IOWeight", 1, 10_000),
    "MemoryHigh": lambda: _int_in("MemoryHigh", 64 * _MiB, limits.ram()),
}


def check_op(req: Any, peer_uid: int, hub_uid: int) -> str:
    """The operation, if this peer may ask for it."""
    if not isinstance(req, dict):
        raise RequestError("invalid", "a request is a JSON object")
    op = req.get("op")
    if peer_uid not in (0, hub_uid):
        raise RequestError("forbidden", f"uid {peer_uid} may not use the appliance daemon")
    if op not in OPS:
        raise RequestError("invalid", f"op must be one of {', '.join(OPS)}, not {op!r}", "op")
    return op


def check_user(req: dict, cfg: Config):
    """The named user's account, if that user may have a server."""
    daemon = cfg["daemon"]
    try:
        pw = users.lookup(req.get("user"), daemon["min_uid"])
    except users.UserError as e:
        raise RequestError("invalid_user", str(e), "user") from None
    if not users.is_member(pw.pw_name, USERS_GROUP):
        raise RequestError(
            "invalid_user", f"{pw.pw_name} is not a member of {USERS_GROUP} (applctl adduser {pw.pw_name})", "user"
        )
    if not daemon["allow_privileged_users"]:
        # A hub that can run code as such a person can become root.
        found = root_only.privileged_groups(pw.pw_name, daemon["privileged_groups"])
        if found:
            raise RequestError(
                "privileged_user", f"{pw.pw_name} is a member of {', '.join(found)}, which is root in all but name; "
                "the appliance starts no server for such accounts (root may allow it: "
                "daemon.allow_privileged_users = true in appliance.toml)", "user")
    return pw


def check_visitor(req: dict, cfg: Config) -> SpawnSpec | None:
    """A visitor's spawn in ephemeral mode; None for an account's spawn in accounts
    mode. The mode is the daemon's reading of appliance.toml: a request of the other
    kind is refused, so a hub cannot turn one into the other."""
    name = req.get("user")
    mode = cfg["hub"]["mode"]
    if not ephemeral.is_visitor(name):
        if mode == "ephemeral":
            shown = str(name)[:40]
            raise RequestError("wrong_mode", f"this appliance is in ephemeral mode (hub.mode in appliance.toml): "
                               f"only visitors get a server ({ephemeral.VISITOR_RULE}), not {shown!r}", "user")
        return None
    if mode != "ephemeral":
        raise RequestError("wrong_mode", f"{name} is a visitor's name and this appliance is in accounts mode "
                           "(hub.mode in appliance.toml): it starts no visitor's server", "user")
    try:
        pwd.getpwnam(name)
    except KeyError:
        pass
    else:  # systemd would run the server as that account instead of a transient uid
        raise RequestError("invalid_user", f"{name} is an account on this machine, so it cannot be a visitor", "user")
    eph = cfg["ephemeral"]
    if eph["shared_dir"] and not os.path.isdir(eph["shared_dir"]):
        raise RequestError("start_failed", f"ephemeral.shared_dir {eph['shared_dir']} is not a directory; "
                           "create it, or set ephemeral.shared_dir to \"\"", "user")
    for path in eph["visible_paths"]:
        check_visible_path(path)
    return SpawnSpec(user=name, uid=-1, gid=-1, home=ephemeral.home(name), visitor=True,
                     shared_dir=eph["shared_dir"] or None, network=eph["network"],
                     visible_paths=list(eph["visible_paths"]),
                     content_hosts=list(eph["content_hosts"]) if eph["network"] != "internet" else [])


def check_visible_path(path: str) -> None:
    """PID 1 follows links in a bind mount's source as root: an ephemeral.visible_paths
    must exist, and nobody but root may be able to swap it or a directory above it
    (or above where it leads) for a link to another place."""
    try:
        os.stat(path)
        found = root_only.replaceable((path, os.path.realpath(path)), itself=False)
    except OSError as e:
        found = (e.filename, f"not usable ({e.strerror})")
    if found is not None:
        part, why = found
        raise RequestError("start_failed", f"ephemeral.visible_paths: {part} (for {path}) is {why}; it must exist, "
                           "and only root may be able to change the folders above it", "user")


def _env(v: Any, user: str, admin_names: frozenset[str]) -> dict[str, str]:
    if not isinstance(v, dict) or len(v) > 256:
        raise RequestError("invalid", "env must be an object of at most 256 variables", "env")
    allowed = protocol.allowed_env(admin_names)
    total = 0
    for k, val in v.items():
        # The daemon's own judgement of a name, even one appliance.toml lists.
        refusal = None if k in protocol.HUB_ENV or k in protocol.ENV_KEEP else protocol.admin_env_refusal(k)
        if refusal is not None and k in admin_names:
            raise RequestError("invalid", f"env: {str(k)[:64]!r} is not accepted, though [spawner] environment "
                               f"of appliance.toml lists it: {refusal}", "env")
        if k not in allowed:
            raise RequestError("invalid", f"env: {str(k)[:64]!r} is not accepted: JupyterHub's own variables, "
                               "LANG, LC_ALL and the names in [spawner] environment of appliance.toml are", "env")
        if not isinstance(val, str) or len(val) > 32 * 1024 or any(c in val for c in "\x00\r\n"):
            raise RequestError("invalid", f"env: {k} must be a one-line string of at most 32 KiB", "env")
        total += len(k) + len(val)
    if total > 128 * 1024:
        raise RequestError("invalid", "env is larger than 128 KiB", "env")
    # The server trusts whoever these name: they must be the user asked for.
    if v.get("JUPYTERHUB_USER", user) != user or v.get("JUPYTERHUB_SERVER_NAME", "") != "":
        raise RequestError("invalid", f"env: JUPYTERHUB_USER must be {user} and JUPYTERHUB_SERVER_NAME empty", "env")
    return dict(v)


def _options(v: Any) -> dict[str, bool | int]:
    if not isinstance(v, dict) or len(v) > len(protocol.SERVER_OPTIONS):
        raise RequestError("invalid", "options must be an object of server options", "options")
    try:
        return {k: protocol.server_option(k, val) for k, val in v.items()}
    except ValueError as e:
        raise RequestError("invalid", f"options: {e}", "options") from None


def _paths(name: str, v: Any) -> list[str]:
    if not isinstance(v, list) or len(v) > 32:
        raise RequestError("invalid", f"{name} must be a list of at most 32 paths", name)
    for p in v:
        if (not isinstance(p, str) or not p.startswith("/") or len(p) > 4096 or "\x00" in p
                or posixpath.normpath(p) != p):
            raise RequestError("invalid", f"{name}: {str(p)[:64]!r} is not a normalised absolute path", name)
    return list(v)


def move_to_port(spec: SpawnSpec, port: int) -> None:
    """The server's port, where the daemon chose another than the hub's (its first
    was taken): in the spec and in JUPYTERHUB_SERVICE_URL, which _server_port checked."""
    parts = urlsplit(spec.env["JUPYTERHUB_SERVICE_URL"])
    spec.env["JUPYTERHUB_SERVICE_URL"] = parts._replace(netloc=f"{parts.hostname}:{port}").geturl()
    spec.port = port


def _server_port(env: dict[str, str], cfg: Config) -> int | None:
    """The port in JUPYTERHUB_SERVICE_URL, where the server listens: systemd binds it
    for the server. It must be on loopback, unprivileged, and none of the appliance's."""
    url = env.get("JUPYTERHUB_SERVICE_URL")
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        port, parts = None, None
    own = {cfg["hub"][k] for k in ("port", "hub_port", "proxy_api_port", "dashboard_port", "metrics_port")}
    if parts is None or parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost") \
            or port is None or not 1024 <= port <= 65535 or port in own:
        raise RequestError("invalid", "env: JUPYTERHUB_SERVICE_URL must be http://127.0.0.1:PORT/... with PORT "
                           "from 1024 to 65535 and none of the appliance's own ports", "env")
    return port


def _provider_groups(v: Any, cfg: Config) -> list[str]:
    """Single sign-on: the person's groups at the provider, from their last login. The
    hub is what checks a login there, so its word is the only one; they count for the
    quota and [limits] like local groups of the same name, and for nothing else."""
    if v and not sso_in_use(cfg):
        raise RequestError("config", 'provider_groups are for single sign-on ([auth] type = "oidc"), which this '
                           "appliance does not use", "provider_groups")
    if not isinstance(v, list) or len(v) > 256 or not all(
            isinstance(g, str) and 1 <= len(g) <= 256 and g.isprintable() for g in v):
        raise RequestError("invalid", "provider_groups must be a list of at most 256 group names of 1 to 256 "
                           "printable characters", "provider_groups")
    return list(v)


def _gpu_count(req: dict, spec: SpawnSpec, cfg: Config) -> int:
    """The GPUs the server gets: a profile's from appliance.toml as the daemon reads
    it, else the count asked for; either within the user's quota. The one check of a
    count on root's side (the hub's form checks it for the person)."""
    if spec.profile is not None:
        count = cfg["profiles"][spec.profile]["gpus"]
        # A hub of the previous release sends the profile's count too: the same, or
        # the hub read another appliance.toml than the daemon.
        if "gpus" in req and (type(req["gpus"]) is not int or req["gpus"] != count):
            raise RequestError("invalid", f"gpus: profile {spec.profile} has {count} GPU(s) in appliance.toml, "
                               f"not {str(req['gpus'])[:40]!r}; a request with a profile leaves gpus out", "gpus")
    else:
        count = _int_in("gpus", 0, MAX_GPUS)(req.get("gpus", 0))
    gpu = cfg["gpu"]
    quota = (cfg["ephemeral"]["gpus"] if spec.visitor
             else quota_for(spec.user, spec.groups, gpu["quota"], gpu["quota_groups"], gpu["quota_users"]))
    if count > quota:
        raise RequestError("quota", str(QuotaError(count, quota)), "profile" if spec.profile else "gpus")
    return count


def check_spawn(req: dict, cfg: Config) -> SpawnSpec:
    known = {"op", *SPAWN_FIELDS, OLD_FALLBACK}
    unknown = sorted(set(req) - known, key=str)
    if unknown:
        shown = str(unknown[0])[:64]
        raise RequestError("invalid", f"unknown field {shown!r}; accepted: {', '.join(sorted(known))}", shown)
    spec = check_visitor(req, cfg)
    if spec is None:
        pw = check_user(req, cfg)
        spec = SpawnSpec(user=pw.pw_name, uid=pw.pw_uid, gid=pw.pw_gid, home=pw.pw_dir)
        try:
            spec.groups = users.groups_of(spec.user)
        except KeyError:
            raise RequestError("invalid_user", f"there is no user {spec.user} on this machine", "user") from None
    spec.groups += _provider_groups(req.get("provider_groups", []), cfg)
    spec.env = _env(req.get("env", {}), spec.user, frozenset(cfg["spawner"]["environment"]))
    spec.port = _server_port(spec.env, cfg)
    spec.options = _options(req.get("options", {}))
    if req.get("mem_limit") is not None:
        spec.mem_limit = _int_in("mem_limit", 64 * _MiB, limits.ram())(req["mem_limit"])
    if req.get("cpu_limit") is not None:
        ncpu = os.cpu_count() or 1
        try:
            spec.cpu_limit = number_in(req["cpu_limit"], 0.01, ncpu)
        except ValueError as e:
            raise RequestError("invalid", f"cpu_limit must be {e}, not {str(req['cpu_limit'])[:40]!r}",
                               "cpu_limit") from None
    profile = req.get("profile")
    if profile is not None and spec.visitor:
        raise RequestError("invalid", "a visitor's server has no profile", "profile")
    if profile is not None and (not isinstance(profile, str) or profile not in cfg["profiles"]):
        raise RequestError("invalid", f"profile {str(profile)[:40]!r} is not in appliance.toml; accepted: "
                           + (", ".join(cfg["profiles"]) or "none (no profiles are configured)"), "profile")
    spec.profile = profile
    spec.readonly_paths = _paths("readonly_paths", req.get("readonly_paths", []))
    spec.readwrite_paths = _paths("readwrite_paths", req.get("readwrite_paths", []))
    spec.gpus = _gpu_count(req, spec, cfg)
    name = "cpu_fallback" if "cpu_fallback" in req or OLD_FALLBACK not in req else OLD_FALLBACK
    fallback = req.get(name, False)
    if not isinstance(fallback, bool):
        raise RequestError("invalid", f"{name} must be true or false, not {str(fallback)[:40]!r}", name)
    spec.cpu_fallback = fallback
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
