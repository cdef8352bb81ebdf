"""The hub–daemon contract: what each side sends and how the other reads it.

One JSON object per line each way, over the daemon's Unix socket. A request names
an op (OPS); a reply is {"ok": true, ...} or {"ok": false, "error": {code, field,
message}} (error_reply). The hub builds spawn requests with spawn_request, and
everyone reads the `gpus` reply with GpuReport.read.

What the hub may put into a user's server is an allow list, not a deny list. A
server's environment holds only the variables JupyterHub's spawner really sends,
the locale names the hub keeps, and names an administrator listed in
appliance.toml. Its command line is built by the daemon from bounded option
values; nothing the hub sends can name code or configuration to load (--config,
extension lists, *_class, extra paths, startup scripts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# --- Requests and replies ---------------------------------------------------------

MAX_REQUEST = 256 * 1024  # bytes in a request line
# Messages quote what the client sent: bound what goes back (and into the log).
MAX_MESSAGE = 1000
# Root (applctl) and the hub ask for the same things: the hub lists the servers
# too (read-only), for its GPU dashboard; "account" makes a single sign-on account
# ([oidc] accounts = "create", daemon/accounts.py). Other uids may ask nothing.
OPS = ("spawn", "stop", "status", "gpus", "list", "account")
# What a spawn request may hold besides "op" (spawn_request builds them).
SPAWN_FIELDS = ("user", "env", "options", "profile", "gpus", "cpu_fallback", "mem_limit", "cpu_limit",
                "readonly_paths", "readwrite_paths", "extra", "provider_groups")
# The name a hub of release 0.x before this one sends for cpu_fallback. The package
# restarts the daemon before the hub, so for a moment the old hub (a spawn waiting
# in the GPU queue asks again every second) talks to the new daemon.
OLD_FALLBACK = "gpu_fallback"

# A refusal's code, for programs to branch on, and what it means.
ERROR_CODES = {
    "invalid": "a field is missing, unknown or out of bounds (the error's field names it)",
    "forbidden": "the peer's uid may not use the daemon",
    "too_large": f"the request line is longer than {MAX_REQUEST} bytes",
    "timeout": "no complete request line in time",
    "busy": "too many requests at once; nothing was done, so asking again is safe",
    "invalid_user": "the user may not have a server (no such account, a system account, not a member)",
    "privileged_user": "the user is root in all but name",
    "root_check": "the user has not been checked for sudo and polkit rights yet",
    "wrong_mode": "a visitor's spawn in accounts mode, or an account's in ephemeral mode",
    "full": "as many visitors' servers run as [ephemeral] allows",
    "quota": "more GPUs than the user's quota",
    "capacity": "not enough GPUs free, and no queue or CPU fallback",
    "queue_timeout": "the wait in the GPU queue ended without a GPU",
    "start_failed": "the server's unit did not start",
    "config": "the daemon's own configuration does not allow it",
    "account": "no single sign-on account for that name (not a name allowed here, taken, or the range is full)",
    "systemd": "systemd refused",
    "internal": "a bug in the daemon",
}
# Refusals worded for the person who asked, shown to them as they are.
FOR_THE_PERSON = ("capacity", "quota", "queue_timeout")


class RequestError(ValueError):
    """A refused request: `code` for programs, `field` and message for people."""

    def __init__(self, code: str, message: str, field: str | None = None):
        self.code, self.field = code, field
        super().__init__(message)

    def reply(self) -> dict[str, Any]:
        return error_reply(self.code, str(self), self.field)


def error_reply(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The one shape of a refusal on the wire."""
    return {"ok": False, "error": {"code": code, "field": field, "message": message[:MAX_MESSAGE]}}


def read_error(reply: dict[str, Any]) -> tuple[str, str, str | None]:
    """(code, message, field) of a refusal."""
    err = reply.get("error") or {}
    return err.get("code", "error"), err.get("message", "unknown error"), err.get("field")


def spawn_request(user: str, *, env: dict[str, str], options: dict[str, bool | int], profile: str | None,
                  gpus: int, cpu_fallback: bool, mem_limit: int | None, cpu_limit: float | None,
                  readonly_paths: list[str], readwrite_paths: list[str], extra: dict[str, int],
                  provider_groups: list[str] = ()) -> dict[str, Any]:
    """A spawn request. With a profile the daemon takes its GPUs, memory and CPU from
    its own appliance.toml, so `gpus` is not sent; without one, `gpus` is the count
    asked for, which the daemon bounds by the quota. mem_limit and cpu_limit
    (Spawner.mem_limit, cpu_limit) can only make the daemon's limits tighter.
    provider_groups: single sign-on's groups of the person, sent only when there are
    some (a daemon of the release before refuses unknown fields)."""
    req: dict[str, Any] = {"op": "spawn", "user": user, "env": env, "options": options, "profile": profile,
                           "cpu_fallback": cpu_fallback, "mem_limit": mem_limit, "cpu_limit": cpu_limit,
                           "readonly_paths": readonly_paths, "readwrite_paths": readwrite_paths, "extra": extra}
    if profile is None:
        req["gpus"] = gpus
    if provider_groups:
        req["provider_groups"] = list(provider_groups)
    return req


@dataclass(frozen=True)
class GpuReport:
    """The daemon's reply to {"op": "gpus"}, read here and nowhere else."""
    available: bool
    reason: str | None = None
    driver_version: str | None = None
    # index, uuid, minor, name, memory_*, utilization, holder, starting, held_since, idle_seconds, ...
    gpus: list[dict] = field(default_factory=list)
    unusable: list = field(default_factory=list)
    # user, gpus, since, granted: every spawn in the GPU queue, in arrival order
    queue: list[dict] = field(default_factory=list)
    reclaim: list[str] = field(default_factory=list)  # users whose idle servers the reclaim rule stops
    raw: dict = field(default_factory=dict)  # as sent, without "ok": for --json

    @classmethod
    def read(cls, reply: dict[str, Any]) -> GpuReport:
        raw = {k: v for k, v in reply.items() if k != "ok"}
        return cls(bool(raw.get("available")), raw.get("reason"), raw.get("driver_version"),
                   list(raw.get("gpus", [])), list(raw.get("unusable", [])), list(raw.get("queue", [])),
                   list(raw.get("reclaim", [])), raw)

    @property
    def free(self) -> int:
        """Places free: GPUs nobody holds, and the seats left on shared ones."""
        return sum(max(0, g.get("seats", 1) - len(g.get("holders") or ([g["holder"]] if g.get("holder") else [])))
                   for g in self.gpus)

    @property
    def waiting(self) -> list[dict]:
        """Spawns waiting for a GPU, in queue order (not those granted and starting)."""
        return [q for q in self.queue if not q.get("granted")]


# --- A server's environment and options ----------------------------------------------

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

# What JupyterHub 6's Spawner.get_env sets (jupyterhub/spawner.py), by exact name:
# a prefix rule would let in JUPYTERHUB_SINGLEUSER_APP, an import path.
HUB_ENV = frozenset({
    "JPY_API_TOKEN", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_ADMIN_ACCESS", "JUPYTERHUB_CLIENT_ID",
    "JUPYTERHUB_COOKIE_OPTIONS", "JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED", "JUPYTERHUB_HOST",
    "JUPYTERHUB_OAUTH_CALLBACK_URL", "JUPYTERHUB_OAUTH_SCOPES", "JUPYTERHUB_OAUTH_ACCESS_SCOPES",
    "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES", "JUPYTERHUB_USER", "JUPYTERHUB_SERVER_NAME", "JUPYTERHUB_API_URL",
    "JUPYTERHUB_ACTIVITY_URL", "JUPYTERHUB_ACTIVITY_INTERVAL", "JUPYTERHUB_BASE_URL", "JUPYTERHUB_SERVICE_PREFIX",
    "JUPYTERHUB_SERVICE_URL",
    "JUPYTERHUB_PUBLIC_URL", "JUPYTERHUB_PUBLIC_HUB_URL", "JUPYTERHUB_SSL_KEYFILE", "JUPYTERHUB_SSL_CERTFILE",
    "JUPYTERHUB_SSL_CLIENT_CA", "JUPYTERHUB_ROOT_DIR", "JUPYTERHUB_DEFAULT_URL", "JUPYTERHUB_DEBUG",
    "JUPYTERHUB_DISABLE_USER_CONFIG", "MEM_LIMIT", "MEM_GUARANTEE", "CPU_LIMIT", "CPU_GUARANTEE",
})
# Spawner.env_keep: copied from the hub's own environment.
ENV_KEEP = ("LANG", "LC_ALL")
# Set by the daemon itself (units.server_env); nobody else may choose them.
DAEMON_ENV = frozenset({"PATH", "SHELL", "HOME", "USER", "LOGNAME", "CUDA_VISIBLE_DEVICES",
                        "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"})
# Names that load code or configuration into the server's processes, or redirect what
# they fetch, whoever sets them. Each family with what it does, for the refusal.
_REFUSED = (
    (re.compile(r"LD_.*|GCONV_PATH"), "the C library loads shared objects it names"),
    # PYTHONPYCACHEPREFIX: .pyc files from a folder of its choice; PYTHONWARNINGS and
    # PYTHONBREAKPOINT: a category or hook named by import path.
    (re.compile(r"PYTHON(STARTUP|HOME|PATH|USERBASE|EXECUTABLE|SAFEPATH|PLATLIBDIR|PYCACHEPREFIX|WARNINGS"
                r"|BREAKPOINT)"), "Python loads code it names"),
    # bash runs BASH_ENV and ENV at start, PROMPT_COMMAND at each prompt, and
    # SHELLOPTS=xtrace expands PS4 (with its $(...)) before each command.
    (re.compile(r"BASH_ENV|ENV|SHELLOPTS|PS4|PROMPT_COMMAND"), "shells run code it names"),
    (re.compile(r"PERL5?LIB|PERL5OPT|RUBYOPT|NODE_OPTIONS"), "an interpreter loads code it names"),
    # XDG_CONFIG_HOME, XDG_DATA_DIRS, ...: where Jupyter, pip and most tools find
    # their configuration, kernels and extensions.
    (re.compile(r"JUPYTER_.*|IPYTHONDIR|XDG_.*"), "Jupyter and other tools read their configuration where it says"),
    (re.compile(r"PIP_.*"), "pip takes it as configuration (package index, trusted hosts)"),
    # curl, pip and Python's urllib read these in any case (urllib lowercases them).
    (re.compile(r"(?i:[a-z0-9_]*_proxy)"), "it sends the server's web traffic through a proxy"),
    (re.compile(r"JUPYTERHUB_.*|JPY_.*"), "it is JupyterHub's own"),
)
_REFUSED_SHOWN = "LD_*, GCONV_PATH, PYTHONPATH and other PYTHON* loaders, BASH_ENV, SHELLOPTS, PS4, " \
                 "PROMPT_COMMAND, JUPYTER*, XDG_*, PIP_*, *_proxy, JPY_*, ..."


def admin_env_name(name: Any) -> str:
    """A variable an administrator may list in [spawner] environment; ValueError says why not."""
    if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
        raise ValueError("a variable name: letters, digits and '_', not starting with a digit")
    if name in DAEMON_ENV:
        raise ValueError(f"a name the appliance does not set itself (it sets {', '.join(sorted(DAEMON_ENV))})")
    if name in ENV_KEEP:
        raise ValueError(f"a name that is not JupyterHub's own ({name} comes from the hub's environment)")
    for pattern, why in _REFUSED:
        if pattern.fullmatch(name):
            raise ValueError(f"a name that loads no code or configuration and sets no proxy ({name}: {why}; "
                             f"{_REFUSED_SHOWN} are refused)")
    return name


def admin_env_refusal(name: Any) -> str | None:
    """Why an administrator's name may not reach a server, or None if it may."""
    try:
        admin_env_name(name)
    except ValueError as e:
        return str(e)
    return None


def allowed_env(admin_names: set[str] | frozenset[str]) -> frozenset[str]:
    """What a spawn request may carry. An administrator's name is judged again here,
    so a configuration that slipped past the check (an older release's) lets no
    refused name through."""
    return HUB_ENV | frozenset(ENV_KEEP) | frozenset(n for n in admin_names if admin_env_refusal(n) is None)


# Options of jupyterhub-singleuser (Jupyter Server) an administrator may pass through
# Spawner.args, each with the values it takes. Rendered by the daemon as --NAME=VALUE.
_BOOL = ("bool", None)
SERVER_OPTIONS: dict[str, tuple[str, tuple[int, int] | None]] = {
    "debug": _BOOL,
    "ServerApp.terminals_enabled": _BOOL,
    "ServerApp.shutdown_no_activity_timeout": ("int", (0, 10**8)),
    "ServerApp.iopub_data_rate_limit": ("int", (0, 10**12)),
    "ServerApp.iopub_msg_rate_limit": ("int", (0, 10**9)),
    "ServerApp.max_body_size": ("int", (0, 2**40)),
    "ServerApp.max_buffer_size": ("int", (0, 2**40)),
    "ContentsManager.allow_hidden": _BOOL,
    "FileContentsManager.delete_to_trash": _BOOL,
    "FileContentsManager.always_delete_dir": _BOOL,
    "MappingKernelManager.cull_idle_timeout": ("int", (0, 10**8)),
    "MappingKernelManager.cull_interval": ("int", (0, 10**8)),
    "MappingKernelManager.cull_connected": _BOOL,
    "MappingKernelManager.cull_busy": _BOOL,
}
_ARG = re.compile(r"--([A-Za-z][A-Za-z0-9_.]{0,80})(?:=(.{0,40}))?")


def server_option(name: Any, value: Any) -> bool | int:
    """A checked option value; ValueError says what is accepted."""
    if not isinstance(name, str) or name not in SERVER_OPTIONS:
        raise ValueError(f"{str(name)[:60]!r} is not an accepted server option; accepted: "
                         + ", ".join(SERVER_OPTIONS))
    kind, bounds = SERVER_OPTIONS[name]
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} takes true or false, not {str(value)[:40]!r}")
        return value
    lo, hi = bounds  # type: ignore[misc]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} takes an integer from {lo} to {hi}, not {str(value)[:40]!r}")
    return value


def parse_args(args: list[str]) -> dict[str, bool | int]:
    """Spawner.args (`--debug`, `--ServerApp.terminals_enabled=False`) -> checked options."""
    out: dict[str, bool | int] = {}
    for arg in args:
        m = _ARG.fullmatch(arg) if isinstance(arg, str) else None
        if not m:
            raise ValueError(f"{str(arg)[:60]!r} is not an option of the form --Name or --Name=value")
        name, text = m.group(1), m.group(2)
        kind = SERVER_OPTIONS.get(name, ("bool", None))[0]
        if text is None:
            value: Any = True
        elif kind == "bool" and text.lower() in ("true", "false", "1", "0"):
            value = text.lower() in ("true", "1")
        elif text.isdigit():
            value = int(text)
        else:
            value = text
        out[name] = server_option(name, value)
    return out


def render_args(options: dict[str, bool | int]) -> list[str]:
    """The daemon's own command-line words for checked options."""
    words = []
    for name, value in sorted(options.items()):
        if name == "debug":
            words += ["--debug"] if value else []
        else:
            words.append(f"--{name}={value}")
    return words
