"""The appliance's TCP ports, held by systemd so that no other local user can take one.

A port a service binds itself is free for a moment at every restart of that service,
and any local account, user server or visitor could bind it then: whoever won the
proxy's API port got the proxy token from the hub's next route check, and whoever
won the hub's or the proxy's port saw every login. So systemd binds them, from
jupyterhub-hub.socket and jupyterhub-proxy.socket, and holds them until the package
is removed; the hub and the proxy are handed them when they start (LISTEN_FDS) and
never bind one themselves. A restart then cuts nobody off either: connections wait
in the socket's backlog until the new process accepts them.

Both socket units are written from appliance.toml by the systemd generator
(`generate`, installed as /usr/lib/systemd/system-generators/jupyterhub-appliance),
since the ports are the administrator's to choose. Their own service is
jupyterhub-hold@.service, which does nothing and stays "active": a connection
while the hub or the proxy is down never starts them, so it can never drive them
into systemd's start limit, which would close the sockets with them and free the
ports.

CHP and JupyterHub cannot listen on unix sockets in the versions Debian 12 and 13
ship (CHP 4.5/4.6), so the links stay TCP on loopback, held this way.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

HUB_SOCKET = "jupyterhub-hub.socket"
PROXY_SOCKET = "jupyterhub-proxy.socket"
HOLDERS = {HUB_SOCKET: "jupyterhub-hold@hub.service", PROXY_SOCKET: "jupyterhub-hold@proxy.service"}
HUB_SERVICE_WANTS = "/etc/systemd/system/multi-user.target.wants/jupyterhub.service"

Address = tuple[str, int]


def wanted(cfg) -> dict[str, list[Address]]:
    """Per socket unit, the addresses appliance.toml asks for. An empty host is every
    address (the proxy's public port without [hub] bind_address)."""
    hub = cfg["hub"]
    hub_side = [("127.0.0.1", hub["hub_port"])]
    if cfg["dashboard"]["enabled"]:
        hub_side.append(("127.0.0.1", hub["dashboard_port"]))
    if cfg["metrics"]["access"] == "loopback":
        hub_side.append(("127.0.0.1", hub["metrics_port"]))
    return {HUB_SOCKET: hub_side,
            PROXY_SOCKET: [(hub["bind_address"], hub["port"]), ("127.0.0.1", hub["proxy_api_port"])]}


def listen_line(addr: Address) -> str:
    host, port = addr
    if not host:
        return str(port)  # [::] and 0.0.0.0 at once, as CHP without --ip listens
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def shown(addr: Address) -> str:
    """An address as a person reads it: every address is '*'."""
    host = "*" if addr[0] in ("", "::", "0.0.0.0") else addr[0]
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


def same(a: Address, b: Address) -> bool:
    """Whether two addresses are one listener: '' (every address) is '::' or '0.0.0.0'."""
    def norm(host: str) -> str:
        return "*" if host in ("", "::", "0.0.0.0") else host
    return a[1] == b[1] and norm(a[0]) == norm(b[0])


# --- the units (the generator) ---------------------------------------------------

def socket_unit(name: str, addrs: list[Address]) -> str:
    what = "the hub, its GPU dashboard and metrics" if name == HUB_SOCKET else "the proxy and its API"
    lines = [
        "# Written by the jupyterhub-appliance generator from /etc/jupyterhub/appliance.toml:",
        "# change the ports there, then `sudo applctl reload`.",
        "[Unit]",
        f"Description=TCP ports of {what}, held for them (jupyterhub-appliance)",
        "Documentation=file:///usr/share/doc/jupyterhub-appliance/README.md",
        "",
        "[Socket]",
        *(f"ListenStream={listen_line(a)}" for a in addrs),
        # A no-op that stays active: traffic never starts (or fails) the hub or proxy.
        f"Service={HOLDERS[name]}",
        # Never shared: SO_REUSEPORT would let another socket of the same uid join.
        "ReusePort=no",
    ]
    if name == HUB_SOCKET:
        lines += ["IPAddressDeny=any", "IPAddressAllow=localhost"]
    return "\n".join(lines) + "\n"


SSO_DROPIN = "jupyterhub.service.d/50-appliance-sso.conf"


def sso_dropin(cfg) -> tuple[str | None, str | None]:
    """Single sign-on's part of the hub's unit: (the drop-in, why it lacks the secret).
    The client secret reaches the hub as a credential, root's file read by PID 1
    (LoadCredential=): never in the unit's properties or the environment, never a
    file the hub could read or replace. Only a file root alone can change is named,
    since PID 1 follows links. A provider off this machine needs the hub's
    loopback-only network opened (it fetches tokens and userinfo there)."""
    from urllib.parse import urlsplit

    from . import config
    from .groups import SECRETS_DIR
    from .state import CRYPT_CREDENTIAL, CRYPT_KEY
    if not config.sso_in_use(cfg):
        return None, None
    lines = ["# Written by the jupyterhub-appliance generator from /etc/jupyterhub/appliance.toml ([oidc]).",
             "[Service]"]
    why = None
    try:
        config.read_client_secret(cfg["oidc"]["client_secret_file"])
        lines.append(f"LoadCredential={config.OIDC_CREDENTIAL}:{cfg['oidc']['client_secret_file']}")
        # The key of the people's tokens in the hub's database (auth_state): root's,
        # made at install (state.py); the hub gets it only while it can use it.
        lines.append(f"LoadCredential={CRYPT_CREDENTIAL}:{SECRETS_DIR}/{CRYPT_KEY}")
    except config.RootFileError as e:
        why = str(e)
    if urlsplit(cfg["oidc"]["issuer"]).hostname not in config.LOOPBACK_HOSTS:
        lines.append("IPAddressAllow=any")
    return "\n".join(lines) + "\n", why


def generate(out: Path, config_path: str | None = None) -> str | None:
    """Write both socket units into the generator's directory OUT, and pull them in
    at boot where jupyterhub.service is enabled; None, or why nothing was written.
    An invalid appliance.toml writes nothing: the hub would not start on it either,
    and sockets already running keep their ports until the file is fixed."""
    from . import config
    try:
        cfg = config.load(config_path or config.DEFAULT_PATH)
    except config.ConfigError as e:
        return f"no port sockets written: {e}"
    boot = Path(HUB_SERVICE_WANTS).exists()
    for name, addrs in wanted(cfg).items():
        (out / name).write_text(socket_unit(name, addrs))
        if boot:
            wants = out / "sockets.target.wants"
            wants.mkdir(exist_ok=True)
            link = wants / name
            if not link.is_symlink():
                link.symlink_to(out / name)
    dropin, why = sso_dropin(cfg)
    if dropin:
        (out / SSO_DROPIN).parent.mkdir(exist_ok=True)
        (out / SSO_DROPIN).write_text(dropin)
    return why and f"single sign-on has no client secret: {why}"


def generator_main() -> None:
    """/usr/lib/systemd/system-generators/jupyterhub-appliance NORMAL [EARLY LATE]"""
    if len(sys.argv) < 2:
        sys.exit("usage: jupyterhub-appliance-generator NORMAL-DIR [EARLY-DIR LATE-DIR]")
    why = generate(Path(sys.argv[1]))
    if why:
        # Generators log to the kernel's log; the hub's own start says it again.
        print(f"jupyterhub-appliance-generator: {why}", file=sys.stderr)


# --- the processes' side ---------------------------------------------------------

class HeldPortError(RuntimeError):
    pass


_held: dict[int, socket.socket] | None = None  # fd -> socket, as systemd passed them


def inherited() -> list[socket.socket]:
    """The listening sockets systemd passed to this process (sd_listen_fds), read
    once; LISTEN_* then leave the environment, so that children do not take them
    for theirs."""
    global _held
    if _held is None:
        _held = {}
        if os.environ.get("LISTEN_PID") == str(os.getpid()):
            for fd in range(3, 3 + int(os.environ.get("LISTEN_FDS", "0") or 0)):
                s = socket.socket(fileno=fd)
                s.set_inheritable(False)
                # systemd passes them blocking; an event loop's accept must not block.
                s.setblocking(False)
                _held[fd] = s
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(key, None)
    return list(_held.values())


def address_of(s: socket.socket) -> Address:
    host, port = s.getsockname()[:2]
    return host, port


def find(addr: Address) -> socket.socket | None:
    return next((s for s in inherited() if same(address_of(s), addr)), None)


def check(unit: str, addrs: list[Address]) -> list[socket.socket]:
    """The held socket for each address, in order; HeldPortError naming what is
    missing if this process was not started with all of them."""
    found, missing = [], []
    for addr in addrs:
        s = find(addr)
        (found if s else missing).append(s or addr)
    if missing:
        held = ", ".join(shown(address_of(s)) for s in inherited()) or "none"
        raise HeldPortError(
            f"{', '.join(shown(a) for a in missing)} is not held for it by {unit} (it holds: {held}); "
            "a port changed in appliance.toml takes effect with: sudo applctl reload")
    return found
