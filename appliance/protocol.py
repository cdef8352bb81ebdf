"""What the hub may put into a user's server: the part of the daemon's wire protocol
both sides must agree on.

An allow list, not a deny list. A server's environment holds only the variables
JupyterHub's spawner really sends, the locale names the hub keeps, and names an
administrator listed in appliance.toml. Its command line is built by the daemon
from bounded option values; nothing the hub sends can name code or configuration
to load (--config, extension lists, *_class, extra paths, startup scripts).
"""

from __future__ import annotations

import re
from typing import Any

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

# What JupyterHub 6's Spawner.get_env sets (jupyterhub/spawner.py), by exact name:
# a prefix rule would let in JUPYTERHUB_SINGLEUSER_APP, an import path.
HUB_ENV = frozenset({
    "JPY_API_TOKEN", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_ADMIN_ACCESS", "JUPYTERHUB_CLIENT_ID",
    "JUPYTERHUB_COOKIE_OPTIONS", "JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED", "JUPYTERHUB_HOST",
    "JUPYTERHUB_OAUTH_CALLBACK_URL", "JUPYTERHUB_OAUTH_SCOPES", "JUPYTERHUB_OAUTH_ACCESS_SCOPES",
    "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES", "JUPYTERHUB_USER", "JUPYTERHUB_SERVER_NAME", "JUPYTERHUB_API_URL",
    "JUPYTERHUB_ACTIVITY_URL", "JUPYTERHUB_ACTIVITY_INTERVAL", "JUPYTERHUB_BASE_URL", "JUPYTERHUB_SERVICE_PREFIX", "JUPYTERHUB_SERVICE_URL",
    "JUPYTERHUB_PUBLIC_URL", "JUPYTERHUB_PUBLIC_HUB_URL", "JUPYTERHUB_SSL_KEYFILE", "JUPYTERHUB_SSL_CERTFILE",
    "JUPYTERHUB_SSL_CLIENT_CA", "JUPYTERHUB_ROOT_DIR", "JUPYTERHUB_DEFAULT_URL", "JUPYTERHUB_DEBUG",
    "JUPYTERHUB_DISABLE_USER_CONFIG", "MEM_LIMIT", "MEM_GUARANTEE", "CPU_LIMIT", "CPU_GUARANTEE",
})
# Spawner.env_keep: copied from the hub's own environment.
ENV_KEEP = ("LANG", "LC_ALL")
# Set by the daemon itself (units.server_env); nobody else may choose them.
DAEMON_ENV = frozenset({"PATH", "SHELL", "HOME", "USER", "LOGNAME", "CUDA_VISIBLE_DEVICES",
                        "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"})
# Names that load code into every process of the server, whoever sets them.
_LOADERS = re.compile(r"LD_.*|PYTHON(STARTUP|HOME|PATH|USERBASE|EXECUTABLE|SAFEPATH|PLATLIBDIR)|BASH_ENV|ENV|"
                      r"PERL5?LIB|PERL5OPT|RUBYOPT|NODE_OPTIONS|JUPYTER_.*|IPYTHONDIR|JUPYTERHUB_.*|JPY_.*")


def admin_env_name(name: Any) -> str:
    """A variable an administrator may list in [spawner] environment; ValueError says why not."""
    if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
        raise ValueError("a variable name: letters, digits and '_', not starting with a digit")
    if name in DAEMON_ENV:
        raise ValueError(f"a name the appliance does not set itself (it sets {', '.join(sorted(DAEMON_ENV))})")
    if _LOADERS.fullmatch(name) or name in ENV_KEEP:
        raise ValueError("a name that does not load code or configuration and is not JupyterHub's own "
                         "(LD_*, PYTHON*, JUPYTER*, JPY_*, BASH_ENV, ... are refused)")
    return name


def allowed_env(admin_names: set[str] | frozenset[str]) -> frozenset[str]:
    return HUB_ENV | frozenset(ENV_KEEP) | frozenset(admin_names)


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
