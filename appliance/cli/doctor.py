"""`applctl doctor`: check the installation, say what is wrong and how to fix it."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from .. import config, held_ports
from ..groups import HUB_USER, SECRETS_DIR, STATE_DIR
from ..net import http_url
from ..state import ROOT_SECRETS, ROTATED, SECRETS, ensure_all, read_proxy_token
from ..tools import tool
from . import daemon
from .common import config_path
from .host import HUB, PROXY, SOCKET, active_state, held_by_systemd, listeners, socket_owners
from .hub import Hub
from .output import Failure, emit, example, json_option, need_root, paint
from .status import proxy_answers

SUDOERS = Path("/etc/sudoers.d/jupyterhub-appliance")
SHADOW = Path("/etc/shadow")
FIX_STATE = "sudo applctl doctor --fix   (creates missing secrets, replaces links, fixes owners and modes)"
REINSTALL = "reinstall the package: sudo apt install --reinstall jupyterhub-appliance (Arch: pacman -S)"
# Which unit may listen on each port setting. The dashboard is a child of the hub.
PORT_OWNERS = {"port": PROXY, "proxy_api_port": PROXY, "hub_port": HUB, "dashboard_port": HUB,
               "metrics_port": HUB}


def port_owners(cfg: config.Config) -> dict[str, str]:
    """The port settings in use with this configuration, and their units."""
    unused = ({"dashboard_port"} if not cfg["dashboard"]["enabled"] else set()) | \
        ({"metrics_port"} if cfg["metrics"]["access"] != "loopback" else set())
    return {k: unit for k, unit in PORT_OWNERS.items() if k not in unused}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None


def check_config() -> tuple[Check, config.Config | None]:
    try:
        cfg = config.load(config_path())
    except config.ConfigError as e:
        return Check("configuration", False, str(e), "sudo applctl config edit"), None
    return Check("configuration", True, f"{config_path()} is valid"), cfg


def check_shadow() -> Check:
    """PAM in the unprivileged hub reads /etc/shadow through group shadow."""
    name = "password check"
    try:
        pw = pwd.getpwnam(HUB_USER)
    except KeyError:
        return Check(name, False, f"there is no user {HUB_USER}", REINSTALL)
    try:
        shadow = grp.getgrnam("shadow")
    except KeyError:
        return Check(name, False, "there is no group shadow", REINSTALL)
    st = SHADOW.stat()
    if st.st_gid != shadow.gr_gid or not st.st_mode & stat.S_IRGRP:
        return Check(name, False, f"{SHADOW} is not readable by group shadow "
                                  f"(group {_group_name(st.st_gid)}, mode {stat.S_IMODE(st.st_mode):04o})",
                     f"sudo chgrp shadow {SHADOW} && sudo chmod 0640 {SHADOW}")
    if HUB_USER not in shadow.gr_mem:
        return Check(name, False, f"{HUB_USER} is not in group shadow, so logins fail",
                     f"sudo usermod -aG shadow {HUB_USER} && sudo systemctl restart jupyterhub")
    # And really: as the hub user with its groups, as the unit runs it.
    groups = os.getgrouplist(HUB_USER, pw.pw_gid)
    r = subprocess.run([tool("test"), "-r", str(SHADOW)], user=pw.pw_uid, group=pw.pw_gid, extra_groups=groups)
    if r.returncode != 0:
        return Check(name, False, f"{HUB_USER} cannot read {SHADOW}", f"sudo chmod g+r {SHADOW}")
    return Check(name, True, f"{HUB_USER} reads {SHADOW} through group shadow")


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def check_sudoers() -> Check:
    name = "sudoers drop-in"
    try:
        st = SUDOERS.stat()
    except FileNotFoundError:
        return Check(name, False, f"{SUDOERS} is missing: admins cannot sudo applctl", REINSTALL)
    if st.st_uid != 0 or stat.S_IMODE(st.st_mode) != 0o440:
        return Check(name, False, f"{SUDOERS} has owner uid {st.st_uid} and mode {stat.S_IMODE(st.st_mode):04o}, "
                                  "not root and 0440", f"sudo chown root:root {SUDOERS} && sudo chmod 0440 {SUDOERS}")
    r = subprocess.run([tool("visudo"), "-cqf", str(SUDOERS)], capture_output=True, text=True)
    if r.returncode != 0:
        said = (r.stderr.strip() or r.stdout.strip()).splitlines()
        return Check(name, False, f"{SUDOERS} is not valid: {said[0] if said else 'visudo refuses it'}", REINSTALL)
    return Check(name, True, f"{SUDOERS} is valid (root, 0440)")


def check_state(state_dir: Path = Path(STATE_DIR), secrets_dir: Path = Path(SECRETS_DIR)) -> Check:
    name = "state files"
    try:
        hub_uid = pwd.getpwnam(HUB_USER).pw_uid
    except KeyError:
        return Check(name, False, f"no user {HUB_USER}", REINSTALL)
    wrong = _wrong_files(state_dir, SECRETS, hub_uid) + _wrong_files(secrets_dir, ROOT_SECRETS, 0)
    db = state_dir / "jupyterhub.sqlite"
    try:
        dbst = db.lstat()  # never through a planted link
    except FileNotFoundError:
        dbst = None
    if dbst is not None and (stat.S_ISLNK(dbst.st_mode) or dbst.st_uid != hub_uid or dbst.st_mode & 0o077):
        wrong.append(f"{db} must belong to {HUB_USER} and be private (mode 0600)")
    if wrong:
        fix = FIX_STATE if all("sqlite" not in w for w in wrong) else \
            f"sudo chown {HUB_USER}: {db} && sudo chmod 0600 {db}; and {FIX_STATE}"
        return Check(name, False, "; ".join(wrong), fix)
    return Check(name, True, f"{state_dir} and its secrets belong to {HUB_USER}, {secrets_dir} and its to root; "
                             "all private")


def _wrong_files(directory: Path, names: tuple[str, ...], uid: int) -> list[str]:
    """What is wrong with a secrets directory (0700) and its files (0600), all of `uid`."""
    wrong = []
    for path, mode in [(directory, 0o700)] + [(directory / f, 0o600) for f in names]:
        try:
            st = path.lstat()  # a link planted by the hub is reported, never followed
        except FileNotFoundError:
            wrong.append(f"{path} is missing")
            continue
        if stat.S_ISLNK(st.st_mode) or (path != directory and (not stat.S_ISREG(st.st_mode) or st.st_nlink != 1)):
            wrong.append(f"{path} is a link or not a plain file")
            continue
        if st.st_uid != uid or stat.S_IMODE(st.st_mode) != mode:
            wrong.append(f"{path} has owner {_user_name(st.st_uid)} and mode {stat.S_IMODE(st.st_mode):04o}, "
                         f"not {_user_name(uid)} and {mode:04o}")
    return wrong


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def check_units() -> Check:
    states = {u: active_state(u) for u in (HUB, PROXY, SOCKET, *held_ports.HOLDERS)}
    down = [f"{u} is {s}" for u, s in states.items() if s != "active"]
    if down:
        return Check("services", False, "; ".join(down),
                     "sudo systemctl start jupyterhub; if it fails, see why with: sudo applctl logs")
    return Check("services", True, "the hub, the proxy, the daemon's socket and the port sockets are active")


def check_daemon() -> Check:
    try:
        n = len(daemon.servers())
    except Failure as e:
        return Check("daemon", False, e.message, "sudo systemctl restart jupyterhub-appliance.socket")
    return Check("daemon", True, f"the root daemon answers ({n} server{'s' if n != 1 else ''} running)")


def check_hub(cfg: config.Config) -> Check:
    hub = Hub(cfg)
    if hub.version() is None:
        return Check("hub API", False, f"the hub does not answer on {hub.where}", "sudo applctl logs --unit hub")
    return Check("hub API", True, f"the hub answers on {hub.where}")


def check_proxy(cfg: config.Config) -> Check:
    api = http_url("127.0.0.1", cfg["hub"]["proxy_api_port"], "/api/routes")
    # The token goes only to the socket systemd holds for the proxy: a port set to
    # one where someone else listens would hand them the proxy (and every login).
    if not held_by_systemd(cfg["hub"]["proxy_api_port"]):
        return Check("proxy", False, f"port {cfg['hub']['proxy_api_port']} (hub.proxy_api_port) is not held by "
                                     "systemd for the proxy, so the proxy token was not sent there",
                     "sudo applctl reload; then sudo applctl doctor (ports) says who listens there")
    try:
        token = read_proxy_token()
    except OSError as e:
        return Check("proxy", False, f"cannot read the proxy token ({e.strerror})", FIX_STATE)
    try:
        req = urllib.request.Request(api, headers={"Authorization": f"token {token}"})
        urllib.request.urlopen(req, timeout=3).close()
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            return Check("proxy", False, f"the proxy's API refuses the hub's token (HTTP {e.code})",
                         "sudo systemctl restart jupyterhub-proxy jupyterhub")
        return Check("proxy", False, f"{api} answers HTTP {e.code}: that is not the proxy's API",
                     "sudo applctl doctor shows what holds the port (ports)")
    except (urllib.error.URLError, OSError) as e:
        return Check("proxy", False, f"the proxy's API does not answer on {api} ({getattr(e, 'reason', e)})",
                     "sudo applctl logs --unit proxy")
    if not proxy_answers(cfg):
        return Check("proxy", False, f"nothing answers on the public port {cfg['hub']['port']}",
                     "sudo applctl logs --unit proxy")
    return Check("proxy", True, f"the proxy answers on port {cfg['hub']['port']} and accepts the hub's token")


def nvidia_hardware(sys_pci: Path = Path("/sys/bus/pci/devices")) -> bool:
    try:
        return any((d / "vendor").read_text().strip() == "0x10de" for d in sys_pci.iterdir())
    except OSError:
        return False


def check_gpus() -> Check:
    try:
        report = daemon.gpus()
    except Failure as e:
        return Check("GPUs", False, f"no GPU report: {e.message}", "sudo systemctl restart jupyterhub-appliance")
    if not report["supported"]:
        return Check("GPUs", True, daemon.GPU_UNSUPPORTED)
    if not report["available"]:
        if nvidia_hardware():
            return Check("GPUs", False, f"an NVIDIA GPU is installed but NVML does not load: {report.get('reason')}",
                         "install the NVIDIA driver (check with nvidia-smi), then: sudo applctl reload")
        return Check("GPUs", True, "CPU-only host (no NVIDIA GPU found)")
    if report.get("unusable"):
        return Check("GPUs", False, "; ".join(f"GPU {u['index']} is unusable: {u['reason']}"
                                              for u in report["unusable"]), "check the GPU with nvidia-smi")
    return Check("GPUs", True, f"NVML loads: {daemon.summary(report)}")


def check_ports(cfg: config.Config) -> Check:
    hub = cfg["hub"]
    owners = port_owners(cfg)
    ports: dict[int, list[str]] = {}
    for key in owners:
        ports.setdefault(hub[key], []).append(key)
    clash = [keys for keys in ports.values() if len(keys) > 1]
    if clash:
        return Check("ports", False, f"hub.{clash[0][0]} and hub.{clash[0][1]} are the same port {hub[clash[0][0]]}",
                     f"sudo applctl config set hub.{clash[0][1]} N, then sudo applctl reload")
    listening = listeners()
    for key, owner_unit in owners.items():
        port = hub[key]
        holders = socket_owners(listening.get(port, set()))
        # PID 1 holds each port for its unit (held_ports.py): systemd's own socket.
        others = [(pid, comm, unit) for pid, comm, unit in holders if unit != owner_unit and pid != 1]
        if others:
            pid, comm, unit = others[0]
            return Check("ports", False, f"port {port} (hub.{key}) is taken by {comm} (pid {pid}"
                                         f"{', ' + unit if unit else ''})",
                         f"choose a free port: sudo applctl config set hub.{key} N && sudo applctl reload; "
                         f"or stop {unit or comm}")
        if not any(pid == 1 for pid, _, _ in holders):
            return Check("ports", False, f"port {port} (hub.{key}) is not held by systemd for {owner_unit}: while it "
                                         "restarts, another local user could take it",
                         "sudo applctl reload (it starts the sockets that hold the ports)")
    return Check("ports", True, "ports " + ", ".join(f"{hub[k]}" for k in owners) + " are held by systemd for "
                 "the hub and the proxy, and nothing else listens there")


def fix_state() -> list[str]:
    """Repair the secrets without following anything planted in the hub's directory,
    and rotate the proxy token and applctl's token (a leaked one stops working);
    restart the proxy and the hub, so both use them."""
    try:
        made = ensure_all(rotate=ROTATED)
    except (OSError, KeyError) as e:
        raise Failure(f"cannot repair {STATE_DIR} and {SECRETS_DIR}: {e}") from None
    subprocess.run([tool("systemctl"), "try-restart", PROXY, HUB], check=False)
    return made


@click.command()
@click.option("--fix", is_flag=True, help="repair the state files (secrets, owners, modes) before checking")
@json_option
@example("sudo applctl doctor\nsudo applctl doctor --fix")
def doctor(fix: bool, as_json: bool) -> None:
    """Check the installation; say what is wrong and how to fix it.

    --fix repairs what it safely can: missing or tampered secrets in
    /var/lib/jupyterhub and /var/lib/jupyterhub-appliance/secrets (a link there is
    replaced, never followed), their owners
    and modes; it also rotates the proxy token and applctl's token, and restarts the
    proxy and the hub to use them. Exit code 0 when every check passes, 1 otherwise.
    """
    need_root("doctor")
    if fix:
        for path in fix_state():
            click.echo(f"made {path} anew", err=True)
        click.echo("rotated the proxy token and applctl's token; restarted the proxy and the hub", err=True)
    first, cfg = check_config()
    checks = [first, check_shadow(), check_sudoers(), check_state(), check_units(), check_daemon()]
    if cfg is not None:
        checks += [check_hub(cfg), check_proxy(cfg), check_ports(cfg)]
    checks.append(check_gpus())
    ok = all(c.ok for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{paint('ok') if c.ok else paint('FAIL')}{'  ' if c.ok else ''}  {c.name}: {c.detail}")
        if c.fix and not c.ok:
            lines.append(f"      fix: {c.fix}")
    lines.append("")
    lines.append("everything looks right" if ok else f"{sum(not c.ok for c in checks)} problem(s) found")
    emit(as_json, {"ok": ok, "checks": [asdict(c) for c in checks]}, "\n".join(lines))
    sys.exit(0 if ok else 1)
