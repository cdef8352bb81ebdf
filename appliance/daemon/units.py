"""What a user's server unit is: its properties and its environment file.

The daemon alone decides these; the hub's request only supplies bounded values
(SpawnSpec). Secrets (the server's API token) travel in a root-owned 0400
EnvironmentFile, never as Environment= properties, which `systemctl show` reveals
to every local user.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from dbus_fast import Variant

from .. import content, ephemeral, protocol
from ..files import write_atomic
from ..gpu.devices import device_allow
from ..groups import LIB_DIR, PYTHON, RUNTIME_DIR, UNIT_SLICE, USER_ENV
from .validate import SpawnSpec

ENV_DIR = Path(RUNTIME_DIR) / "env"
# jupyterhub-singleuser, started without cyclic GC until it serves (appliance/singleuser.py).
SINGLEUSER = USER_ENV + "/bin/appliance-singleuser"
# ...run by the interpreter named with its minor version: the unit then says which
# Python it runs (python_of), and one left from before a Debian upgrade names an
# interpreter the new environment does not have (docs/upgrades.md).
INTERPRETER = f"{USER_ENV}/bin/python{PYTHON}"
# The user environment ships JupyterLab's news and update check disabled (a page
# config drop-in in its etc/jupyter, see scripts/stage-tree); this config directory,
# put ahead of it on JUPYTER_CONFIG_PATH, enables them again ([spawner] jupyterlab_news).
NEWS_ON_CONFIG = USER_ENV + "/etc/jupyterhub-appliance/news-on"
_SHELL_ESCAPE = '\\"`$'
# A server's PATH: the user environment's tools first, so `pip`, `jupyter` and the kernel agree.
SERVER_PATH = f"{USER_ENV}/bin:/usr/local/bin:/usr/bin:/bin"


def env_file_text(env: dict[str, str]) -> str:
    """systemd EnvironmentFile syntax: double quotes, with \\ \" ` $ escaped."""
    lines = []
    for k, v in sorted(env.items()):
        quoted = "".join("\\" + c if c in _SHELL_ESCAPE else c for c in v)
        lines.append(f'{k}="{quoted}"\n')
    return "".join(lines)


def write_env_file(unit: str, env: dict[str, str], env_dir: Path = ENV_DIR) -> Path:
    env_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = env_dir / f"{unit}.env"
    write_atomic(path, env_file_text(env), 0o400)
    return path


# [apps.NAME] with {port}: the app listens on this port of 127.0.0.1 in a network
# namespace of its own (appliance/app_bridge.py), where only its bridge reaches it.
# Below 1024, so that allowing it (apps_bind) lets no server bind it on the machine's
# own network: an unprivileged uid cannot bind a port below 1024 there.
APP_PORT = 80
# The variable that carries the apps to the server's launcher (appliance/singleuser.py).
APPS_VARIABLE = "APPLIANCE_APPS"


def apps_env(apps: dict[str, dict]) -> dict[str, str]:
    """[apps.NAME] that are enabled, as the daemon read them, for the server: JSON in
    one variable, which appliance/singleuser.py takes out of the environment."""
    enabled = {name: {k: app[k] for k in ("command", "title", "icon", "timeout", "environment")}
               for name, app in sorted(apps.items()) if app["enabled"]}
    if not enabled:
        return {}
    return {APPS_VARIABLE: json.dumps({"port": APP_PORT, "apps": enabled}, separators=(",", ":"))}


def port_apps(apps: dict[str, dict]) -> list[str]:
    """The enabled apps that listen on {port} (in a network namespace of their own)."""
    return [name for name, app in sorted(apps.items()) if app["enabled"] and any("{port}" in a for a in app["command"])]


def apps_bind(apps: dict[str, dict]) -> list[tuple[str, Variant]]:
    """SocketBindAllow=tcp:APP_PORT where an enabled app listens on {port}: the app
    binds it inside its own network namespace, which the cgroup's bind filter (it
    knows no namespaces) would otherwise refuse."""
    if not port_apps(apps):
        return []
    return [("SocketBindAllow", Variant("a(iiqq)", [(AF_UNSPEC, IPPROTO_TCP, 1, APP_PORT)]))]


def server_env(spec: SpawnSpec, lab_news: bool = False, secret_env: dict[str, str] | None = None,
               apps: dict[str, dict] | None = None) -> dict[str, str]:
    """`secret_env`: [spawner] environment_file's variables (their names are never
    among those the hub may send). `apps`: [apps.NAME] as the daemon read them."""
    env = {**spec.env, **(secret_env or {})}
    env.pop(APPS_VARIABLE, None)
    env.update(apps_env(apps or {}))
    if lab_news:
        env["JUPYTER_CONFIG_PATH"] = ":".join(filter(None, [env.get("JUPYTER_CONFIG_PATH"), NEWS_ON_CONFIG]))
    # The user environment's tools first, so `pip`, `jupyter` and the kernel agree.
    env["PATH"] = SERVER_PATH
    env.setdefault("SHELL", "/bin/bash")
    # Kernels' unix sockets live here (KERNELS_OVER_UNIX_SOCKETS): a path under a
    # home such as /var/lib/private/jupyter-visitor-…/.local/share/jupyter/runtime/
    # is past the 107 bytes a unix socket's path may have.
    env["JUPYTER_RUNTIME_DIR"] = f"/run/{runtime_dir(spec)}"
    if spec.visitor:  # no passwd entry to take these from
        env.update(HOME=spec.home, USER=spec.user, LOGNAME=spec.user)
    # UUIDs, not indices: inside a device cgroup CUDA renumbers what it can see.
    # Empty for a CPU-only server, which then sees no GPU even if one is visible.
    visible = ",".join(spec.gpu_uuids)
    env["CUDA_VISIBLE_DEVICES"] = visible
    env["NVIDIA_VISIBLE_DEVICES"] = visible
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return env


def runtime_dir(spec: SpawnSpec) -> str:
    """The server's RuntimeDirectory= under /run: its own, 0700, gone with the unit."""
    return f"jupyter-{spec.user}"


AF_UNSPEC, IPPROTO_TCP = 0, 6
# Kernels bind TCP ports of their own otherwise, which SocketBindDeny= refuses.
KERNELS_OVER_UNIX_SOCKETS = ["--KernelManager.transport=ipc"]


def no_socket_bind() -> list[tuple[str, Variant]]:
    """SocketBindDeny=any, as systemd's D-Bus API takes it: (address family, protocol,
    number of ports, first port); 0 ports is any. The server's own port is bound by
    its socket unit (socket_properties), so nothing in the server binds one."""
    return [("SocketBindDeny", Variant("a(iiqq)", [(AF_UNSPEC, 0, 0, 0)]))]


def socket_unit(unit: str) -> str:
    """jupyter-NAME.socket, which holds the port of jupyter-NAME.service."""
    return unit.removesuffix(".service") + ".socket"


def socket_properties(unit: str, port: int) -> list[tuple[str, Variant]]:
    """The server's port, bound by systemd (as root) before the server starts and
    handed to it (LISTEN_FDS; appliance/singleuser.py adopts it), held until the
    server stops.

    A port the server bound itself was free from the hub's choice until JupyterLab
    had imported, a second or more, and any local account could read it from the
    unit (SocketBindAllow=) and bind it first: the hub then sent the owner's browser
    to the thief's listener. Now the hub's route goes only to a port systemd holds
    for this unit; one taken in between fails the socket's start, and the daemon
    tries another port (Spawns._start_unit).

    BindsTo=: the socket stops with its server, never outliving it to start the
    server again on a stray connection."""
    return [
        ("Description", Variant("s", f"The port of {unit}")),
        ("Listen", Variant("a(ss)", [("Stream", f"127.0.0.1:{port}")])),
        ("BindsTo", Variant("as", [unit])),
    ]


def held_port(unit: str) -> list[tuple[str, Variant]]:
    """The server starts only once its socket unit listens, and stops with it."""
    sock = socket_unit(unit)
    return [("Requires", Variant("as", [sock])), ("After", Variant("as", [sock]))]


MS_REC = 16384  # a recursive bind mount, as BindReadOnlyPaths= makes from the unit file
# What ProtectHome= empties: the homes of the machine's people.
HOME_TOPS = ("/home", "/root", "/run/user")


def _under(path: str, tops: tuple[str, ...]) -> bool:
    return any(path == top or path.startswith(top + "/") for top in tops)


def private_homes(spec: SpawnSpec) -> list[tuple[str, Variant]]:
    """No server sees the machine's people: /home, /root and /run/user are empty
    (ProtectHome=tmpfs), so a home of mode 0755 stays private, and no other uid's
    process is visible (ProtectProc=invisible). An account's own home is bound back
    in, and so is any path under them that the hub names to be read-only or writable
    (readonly_paths, readwrite_paths), so that it still exists. A home elsewhere
    (/srv/home/...) is not hidden, and needs no binding."""
    props = [("ProtectHome", Variant("s", "tmpfs")), ("ProtectProc", Variant("s", "invisible"))]
    if spec.visitor:  # a visitor's home is under /var/lib; nothing of the people's is theirs
        return props
    # A missing home fails the start, as it did before; a missing listed path is skipped.
    writable = [(p, p, p != spec.home, MS_REC) for p in [spec.home, *spec.readwrite_paths] if _under(p, HOME_TOPS)]
    readonly = [(p, p, True, MS_REC) for p in spec.readonly_paths if _under(p, HOME_TOPS)]
    if writable:
        props.append(("BindPaths", Variant("a(ssbt)", writable)))
    if readonly:
        props.append(("BindReadOnlyPaths", Variant("a(ssbt)", readonly)))
    return props


AF_INET, AF_INET6 = 2, 10
# Cloud instance metadata hands out the machine's cloud credentials: AWS, GCP, Azure,
# OpenStack and DigitalOcean answer on link-local 169.254.169.254 (ECS on 169.254.170.2),
# AWS also on fd00:ec2::254, Alibaba on 100.100.100.200. Never a visitor's.
CLOUD_METADATA = ("169.254.0.0/16", "fd00:ec2::254/128", "100.100.100.200/32")
# [ephemeral] network -> the addresses a visitor's server may exchange packets with
# (None: any but CLOUD_METADATA). The proxy and the hub's API are on 127.0.0.1, so
# every choice keeps the server reachable and able to authenticate its visitor.
VISITOR_NETWORKS = {
    "none": ("127.0.0.1/32",),
    "loopback": ("127.0.0.0/8", "::1/128"),
    "internet": None,
}


def ip_prefixes(cidrs) -> Variant:
    """IPAddressAllow=/IPAddressDeny= as systemd's D-Bus API takes them:
    (address family, address bytes, prefix length)."""
    nets = [ipaddress.ip_network(c) for c in cidrs]
    return Variant("a(iayu)", [(AF_INET if n.version == 4 else AF_INET6, n.network_address.packed, n.prefixlen)
                               for n in nets])


def content_addresses(found: dict[str, list[str]]) -> list[str]:
    """The addresses of [ephemeral] content_hosts a visitor's server may reach, each
    one alone (/32, /128): never cloud metadata, an unspecified or a multicast
    address, whatever a resolver answered."""
    metadata = [ipaddress.ip_network(c) for c in CLOUD_METADATA]
    out = []
    for addrs in found.values():
        for a in addrs:
            ip = ipaddress.ip_address(a)
            if ip.is_unspecified or ip.is_multicast or ip.is_link_local \
                    or any(ip.version == n.version and ip in n for n in metadata):
                continue
            out.append(f"{ip}/{ip.max_prefixlen}")
    return list(dict.fromkeys(out))


def visitor_network(network: str, found: dict[str, list[str]] | None = None) -> list[tuple[str, Variant]]:
    """What a visitor's server may reach, and the addresses of content hosts besides.
    systemd filters by address, not by port: "loopback" and "none" still let it
    connect to another service of this machine that listens on 127.0.0.1 (README,
    Security model)."""
    allow = VISITOR_NETWORKS[network]
    if allow is None:
        return [("IPAddressDeny", ip_prefixes(CLOUD_METADATA))]
    allow = (*allow, *content_addresses(found or {}))
    return [("IPAddressAllow", ip_prefixes(allow)), ("IPAddressDeny", ip_prefixes(("0.0.0.0/0", "::/0")))]


HOSTS_DIR = Path(RUNTIME_DIR) / "hosts"
RESOLVED_DIR = Path(RUNTIME_DIR) / "resolved"
RESOLVER_SECONDS = 10  # for all of [ephemeral] content_hosts, at one spawn


def write_hosts_file(unit: str, found: dict[str, list[str]], etc_hosts: Path = Path("/etc/hosts"),
                     hosts_dir: Path = HOSTS_DIR) -> Path | None:
    """The server's /etc/hosts when content hosts are names: the machine's own, and the
    addresses the daemon allowed, so the server's lookups need no DNS (which its
    network may not reach) and find exactly what its firewall lets through."""
    pinned = {name: [cidr.split("/")[0] for cidr in content_addresses({name: addrs})]
              for name, addrs in found.items() if not content.is_address(name)}
    if not any(pinned.values()):
        return None
    try:
        base = etc_hosts.read_text(encoding="utf-8", errors="replace")[:256 * 1024]
    except OSError:
        base = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
    hosts_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = hosts_dir / f"{unit}.hosts"
    write_atomic(path, content.hosts_text(base, pinned), 0o644)
    return path


def resolver_unit(name: str) -> str:
    """The one-shot unit that resolves content hosts for visitor NAME's spawn."""
    return f"appliance-resolve-{ephemeral.state_name(name)}.service"


def resolver_properties(names: list[str], out: Path) -> list[tuple[str, Variant]]:
    """The daemon has no network (PrivateNetwork=): a unit of its own resolves the
    content hosts, as a transient uid with nothing else, and writes JSON to `out`,
    which systemd opens as root for it."""
    argv = [f"{LIB_DIR}/hub/bin/python", "-I", "-m", "appliance.content", "resolve", *names]
    return [
        ("Description", Variant("s", "Resolve [ephemeral] content_hosts for a visitor's server")),
        ("ExecStart", Variant("a(sasb)", [(argv[0], argv, False)])),
        ("Type", Variant("s", "oneshot")),
        ("CollectMode", Variant("s", "inactive-or-failed")),
        ("StandardOutputFileToTruncate", Variant("s", str(out))),
        ("DynamicUser", Variant("b", True)),
        ("ProtectSystem", Variant("s", "strict")),
        ("ProtectHome", Variant("s", "yes")),
        ("PrivateTmp", Variant("b", True)),
        ("PrivateDevices", Variant("b", True)),
        ("NoNewPrivileges", Variant("b", True)),
        ("CapabilityBoundingSet", Variant("t", 0)),
        ("RestrictAddressFamilies", Variant("(bas)", (True, ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]))),
        ("IPAddressDeny", ip_prefixes(CLOUD_METADATA)),
        ("RuntimeMaxUSec", Variant("t", RESOLVER_SECONDS * 1_000_000)),
    ]


EPERM = 1


def hidden_places(visible: list[str]) -> list[tuple[str, Variant]]:
    """/srv, /opt, /mnt, /media, /data are inaccessible to a visitor ("-": where there
    is one); ephemeral.shared_dir is bound into the home even from below them. One that
    holds an ephemeral.visible_paths is an empty read-only tmpfs instead, so that the
    path bound into it can be reached (an inaccessible directory cannot be passed)."""
    holding = [top for top in ephemeral.HIDDEN if any(p.startswith(top + "/") for p in visible)]
    props = [("InaccessiblePaths", Variant("as", ["-" + top for top in ephemeral.HIDDEN if top not in holding]))]
    if holding:
        props.append(("TemporaryFileSystem", Variant("a(ss)", [(top, "ro") for top in holding])))
    return props


def visitor_sandbox(spec: SpawnSpec) -> list[tuple[str, Variant]]:
    """A visitor's server: a uid that exists only while it runs, a home that is a
    StateDirectory= (the daemon deletes it after the stop), a read-only system,
    nothing of the machine's people, data or other processes to see, no namespaces
    of its own, the system calls of an ordinary service, and the network
    ephemeral.network allows. Anyone who opens the hub's address runs code here."""
    state = ephemeral.state_name(spec.user)
    props = [
        ("DynamicUser", Variant("b", True)),
        ("StateDirectory", Variant("as", [state])),
        ("StateDirectoryMode", Variant("u", 0o700)),
        ("ProtectSystem", Variant("s", "strict")),
        *hidden_places(spec.visible_paths),
        ("ProtectKernelTunables", Variant("b", True)),
        ("ProtectKernelModules", Variant("b", True)),
        ("ProtectKernelLogs", Variant("b", True)),
        ("ProtectControlGroups", Variant("b", True)),
        ("ProtectClock", Variant("b", True)),
        ("ProtectHostname", Variant("b", True)),
        ("RestrictSUIDSGID", Variant("b", True)),
        ("RemoveIPC", Variant("b", True)),
        ("CapabilityBoundingSet", Variant("t", 0)),
        # The namespace types it may make: none (unshare -U is how unprivileged
        # code reaches much of the kernel's attack surface).
        ("RestrictNamespaces", Variant("t", 0)),
        ("LockPersonality", Variant("b", True)),
        ("RestrictRealtime", Variant("b", True)),
        # JupyterLab and ipykernel need nothing beyond @system-service; a refused
        # call fails with EPERM rather than killing the kernel with SIGSYS.
        ("SystemCallArchitectures", Variant("as", ["native"])),
        ("SystemCallFilter", Variant("(bas)", (True, ["@system-service"]))),
        ("SystemCallErrorNumber", Variant("i", EPERM)),
        # No AF_VSOCK (the hypervisor), AF_PACKET, Bluetooth...; netlink for getaddrinfo.
        ("RestrictAddressFamilies", Variant("(bas)", (True, ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]))),
        *visitor_network(spec.network, spec.content),
        # Nothing of a visitor is kept: no core dump of theirs; their server's log
        # lines (not what a cell prints) go to the journal, at most 500 in 30 s.
        ("LimitCORE", Variant("t", 0)),
        ("LimitCORESoft", Variant("t", 0)),
        ("LogRateLimitIntervalUSec", Variant("t", 30_000_000)),
        ("LogRateLimitBurst", Variant("u", 500)),
    ]
    shown = [(p, p, False, MS_REC) for p in spec.visible_paths]
    if spec.shared_dir:
        shown.append((spec.shared_dir, f"{spec.home}/shared", False, MS_REC))
    if spec.hosts_file:
        shown.append((spec.hosts_file, "/etc/hosts", False, 0))
    if shown:
        props.append(("BindReadOnlyPaths", Variant("a(ssbt)", shown)))
    return props


def cleaner_properties(name: str) -> list[tuple[str, Variant]]:
    """A one-shot unit that deletes a stopped visitor's home. The daemon has no
    capabilities (it cannot enter a directory of another uid), so systemd runs this
    as full root, once no process of the visitor's uid is left."""
    argv = ephemeral.forget_argv(name)
    return [
        ("Description", Variant("s", f"Delete everything of visitor {name}")),
        ("ExecStart", Variant("a(sasb)", [(argv[0], argv, False)])),
        ("Type", Variant("s", "oneshot")),
        ("CollectMode", Variant("s", "inactive-or-failed")),
        ("PrivateNetwork", Variant("b", True)),
        ("NoNewPrivileges", Variant("b", True)),
    ]


def python_of(exec_start: object) -> str | None:
    """The Python minor version ("3.11") a server unit was started with, from its
    ExecStart as systemd reports it; None for a unit that does not name it (started
    by 0.2.0 or older, or by an administrator's command)."""
    try:
        path = exec_start[0][0]  # [(path, argv, ignore_failure, timestamps...)]
    except (TypeError, IndexError, KeyError):
        return None
    prefix = USER_ENV + "/bin/python"
    version = path[len(prefix):] if isinstance(path, str) and path.startswith(prefix) else ""
    major, _, minor = version.partition(".")
    return version if major.isdigit() and minor.isdigit() else None


def properties(unit: str, spec: SpawnSpec, env_file: Path,
               command: list[str] | None = None, apps: dict[str, dict] | None = None) -> list[tuple[str, Variant]]:
    argv = (command or [INTERPRETER, SINGLEUSER]) + KERNELS_OVER_UNIX_SOCKETS + protocol.render_args(spec.options)
    props: list[tuple[str, Variant]] = [
        ("Description", Variant("s", f"JupyterLab server of {spec.user}"
                                     + (f" (GPUs {', '.join(spec.gpu_uuids)})" if spec.gpu_uuids else ""))),
        ("ExecStart", Variant("a(sasb)", [(argv[0], argv, False)])),
        # exec: the start job finishes only once the environment file has been read
        # and the server exec'd, so the daemon can delete the file right after.
        ("Type", Variant("s", "exec")),
        ("User", Variant("s", spec.user)),
        *(visitor_sandbox(spec) if spec.visitor else [("Group", Variant("s", str(spec.gid)))]),
        *private_homes(spec),
        ("WorkingDirectory", Variant("s", spec.home)),
        ("EnvironmentFiles", Variant("a(sb)", [(str(env_file), False)])),
        ("Slice", Variant("s", UNIT_SLICE)),
        ("DevicePolicy", Variant("s", "closed")),
        ("DeviceAllow", Variant("a(ss)", device_allow(spec.gpu_devices))),
        ("NoNewPrivileges", Variant("b", True)),
        ("PrivateTmp", Variant("b", True)),
        ("RuntimeDirectory", Variant("as", [runtime_dir(spec)])),
        ("RuntimeDirectoryMode", Variant("u", 0o700)),
        # It binds no port: its own comes from its socket unit, and kernels talk over
        # unix sockets.
        *no_socket_bind(),
        *apps_bind(apps or {}),
        *(held_port(unit) if spec.port is not None else []),
        ("KillMode", Variant("s", "mixed")),
        ("TimeoutStopUSec", Variant("t", 20_000_000)),
        # A unit that fails is kept until the next spawn resets it, so that the hub
        # can read why (Result=oom-kill, an exit code); it holds no GPU meanwhile.
        ("CollectMode", Variant("s", "inactive")),
    ]
    if spec.device_group:
        # Where the NVIDIA device files are 0660 to this group (README, "GPU device
        # files"), only a server holding a GPU may open them; DeviceAllow= still picks which.
        props.append(("SupplementaryGroups", Variant("as", [spec.device_group])))
    if spec.mem_limit is not None:
        props += [("MemoryAccounting", Variant("b", True)), ("MemoryMax", Variant("t", spec.mem_limit))]
    if spec.cpu_limit is not None:
        props += [("CPUAccounting", Variant("b", True)),
                  ("CPUQuotaPerSecUSec", Variant("t", int(spec.cpu_limit * 1_000_000)))]
    if spec.tasks_max is not None:
        props.append(("TasksMax", Variant("t", spec.tasks_max)))
    if spec.readonly_paths:
        props.append(("ReadOnlyPaths", Variant("as", spec.readonly_paths)))
    if spec.readwrite_paths:
        props.append(("ReadWritePaths", Variant("as", spec.readwrite_paths)))
    for k, v in spec.extra.items():
        props.append((k, Variant("t", v)))
    return props
