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

from .. import config, held_ports, privilege, root_grants, root_only, root_verdicts, users
from ..daemon_client import DaemonError, call_sync
from ..groups import HUB_USER, SECRETS_DIR, STATE_DIR
from ..net import http_url
from ..password_check import SOCKET as PAM_PATH
from ..state import ROOT_SECRETS, ROTATED, SECRETS, ensure_all, read_proxy_token
from ..tools import tool
from . import daemon_calls as daemon
from .common import config_path
from .host import HUB, PAM_SOCKET, PROXY, SOCKET, active_state, held_by_systemd, listeners, socket_owners
from .hub_api import Hub
from .output import Failure, emit, example, json_option, need_root, paint
from .status import proxy_answers

SUDOERS = Path("/etc/sudoers.d/jupyterhub-appliance")
NVIDIA_PARAMS = Path("/proc/driver/nvidia/params")
GPU_EXAMPLE = "/usr/share/doc/jupyterhub-appliance/examples/nvidia-device-files.conf"
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
    warning: bool = False  # works, but is weaker than it could be: said, not counted as a problem


def check_config() -> tuple[Check, config.Config | None]:
    try:
        cfg = config.load(config_path())
    except config.ConfigError as e:
        return Check("configuration", False, str(e), "sudo applctl config edit"), None
    return Check("configuration", True, f"{config_path()} is valid"), cfg


def check_password() -> Check:
    """jupyterhub-pam answers the hub's password checks, and the hub itself cannot
    read /etc/shadow (code run in the hub would get every password hash)."""
    name = "password check"
    try:
        pw = pwd.getpwnam(HUB_USER)
    except KeyError:
        return Check(name, False, f"there is no user {HUB_USER}", REINSTALL)
    # As the hub user with its groups, as systemd starts the unit.
    groups = os.getgrouplist(HUB_USER, pw.pw_gid)
    r = subprocess.run([tool("test"), "-r", str(SHADOW)], user=pw.pw_uid, group=pw.pw_gid, extra_groups=groups)
    if r.returncode == 0:
        gid = SHADOW.stat().st_gid
        fix = (f"sudo gpasswd -d {HUB_USER} {_group_name(gid)} && sudo systemctl restart jupyterhub"
               if gid in groups else f"sudo chmod o-r {SHADOW}")
        return Check(name, False, f"{HUB_USER} can read {SHADOW}, so code run in the hub could read every "
                                  "password hash (jupyterhub-pam checks passwords; the hub needs no access)", fix)
    try:
        call_sync({}, path=PAM_PATH, timeout=10, busy_retry=0)
    except DaemonError as e:
        if e.code != "invalid":  # it answered, refusing the empty request: alive
            return Check(name, False, str(e), f"sudo systemctl restart {PAM_SOCKET}; sudo applctl logs --unit pam")
    return Check(name, True, f"jupyterhub-pam answers on {PAM_PATH}; {HUB_USER} cannot read {SHADOW}")


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
    states = {u: active_state(u) for u in (HUB, PROXY, SOCKET, PAM_SOCKET, *held_ports.HOLDERS)}
    down = [f"{u} is {s}" for u, s in states.items() if s != "active"]
    if down:
        return Check("services", False, "; ".join(down),
                     "sudo systemctl start jupyterhub; if it fails, see why with: sudo applctl logs")
    return Check("services", True, "the hub, the proxy, the daemon's and the password check's sockets and the port "
                                   "sockets are active")


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
    if not report.available:
        if nvidia_hardware():
            return Check("GPUs", False, f"an NVIDIA GPU is installed but NVML does not load: {report.reason}",
                         "install the NVIDIA driver (check with nvidia-smi), then: sudo applctl reload")
        return Check("GPUs", True, "CPU-only host (no NVIDIA GPU found)")
    if report.unusable:
        return Check("GPUs", False, "; ".join(f"GPU {u['index']} is unusable: {u['reason']}"
                                              for u in report.unusable), "check the GPU with nvidia-smi")
    return Check("GPUs", True, f"NVML loads: {daemon.summary(report)}")


def check_root_equivalent(cfg: config.Config) -> Check:
    """Members of jupyterhub-users or -admins who are root in all but name (groups,
    sudo, polkit). Also renews root_grants' verdict, which the daemon goes by."""
    name = "root-equivalent accounts"
    verdict = root_grants.judge_all()
    try:
        root_verdicts.write_verdicts(verdict)
    except OSError as e:
        return Check(name, False, f"cannot write {root_verdicts.VERDICTS}: {e}",
                     f"make {root_verdicts.VERDICTS.parent} a directory of root's, mode 0755")
    found = verdict["checked"]
    bad = {n: why for n in found
           if (why := privilege.root_equivalent(n, cfg["daemon"], verdict["granted"].get(n, [])))}
    unread = verdict["unread"]
    blind = f" (could not read {', '.join(unread)})" if unread else ""
    # A list set in appliance.toml replaces the default: groups added to the default
    # since (incus-admin) are not in it until someone adds them.
    listed = cfg["daemon"]["privileged_groups"]
    missing = [g for g in root_only.PRIVILEGED_GROUPS if g not in listed]
    if not bad and missing:
        grown = "[" + ", ".join(f'"{g}"' for g in [*listed, *missing]) + "]"
        return Check(name, True, f"daemon.privileged_groups in appliance.toml leaves out {', '.join(missing)} of "
                                 "the default list, so their members count as ordinary users",
                     f"sudo applctl config set daemon.privileged_groups '{grown}'", warning=True)
    if not bad:
        return Check(name, True, f"none of the {len(found)} account(s) with access is root in all but name "
                                 f"(daemon.privileged_groups, sudo, polkit){blind}")
    allowed = cfg["daemon"]["allow_privileged_users"]
    return Check(name, allowed, "; ".join(f"{n} is root in all but name ({'; '.join(why)})" for n, why in bad.items())
                 + (" (daemon.allow_privileged_users = true: they get servers)" if allowed else
                    ": the daemon starts no server for them") + blind,
                 "take the right away (the group, the sudoers rule, the polkit rule), or their access: "
                 "sudo applctl deluser NAME")


def nvidia_params(path: Path = NVIDIA_PARAMS) -> dict[str, int]:
    """The driver's DeviceFileUID, DeviceFileGID and DeviceFileMode ({} if not loaded)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("DeviceFileUID", "DeviceFileGID", "DeviceFileMode") and value.strip().isdigit():
            out[key.strip()] = int(value.strip())
    return out


def nvidia_nodes(dev: Path = Path("/dev")) -> dict[str, os.stat_result]:
    """/dev/nvidiactl and /dev/nvidiaN: what DeviceFileMode governs."""
    try:
        names = sorted(n for n in os.listdir(dev) if n == "nvidiactl" or (n.startswith("nvidia") and n[6:].isdigit()))
    except OSError:
        return {}
    return {str(dev / n): os.stat(dev / n) for n in names}


def check_gpu_devices(cfg: config.Config, params: dict[str, int] | None = None,
                      nodes: dict[str, os.stat_result] | None = None) -> Check:
    """Device files anyone may open let a user with another way in (ssh, cron) use
    every GPU outside the units' device cgroup; 0660 to a group only GPU servers get
    closes that."""
    name = "GPU device files"
    params = nvidia_params() if params is None else params
    nodes = nvidia_nodes() if nodes is None else nodes
    if not nodes and not params:
        return Check(name, True, "no NVIDIA device files")
    group = cfg.values.get("gpu", {}).get("device_group", "")
    mode = params.get("DeviceFileMode")
    driver = f"; the driver makes them {mode:04o} (NVreg_DeviceFileMode)" if mode is not None else ""
    open_to_all = [f"{p} {stat.S_IMODE(st.st_mode):04o}" for p, st in nodes.items() if st.st_mode & 0o006]
    if open_to_all or (mode is not None and mode & 0o006):
        return Check(name, True, f"anyone may open them ({', '.join(open_to_all[:3]) or 'none yet'}{driver}): a local "
                                 "user with another way in (ssh, cron) can use every GPU outside the appliance's "
                                 "units", f"make them 0660 to a group only GPU servers get: see {GPU_EXAMPLE}",
                     warning=True)
    gids = {st.st_gid for st in nodes.values() if st.st_mode & 0o060}
    shown = ", ".join(sorted(_group_name(g) for g in gids))
    if not group:
        if gids - {0}:
            return Check(name, False, f"they are group {shown}'s only, and gpu.device_group is not set: servers "
                                      "cannot open their GPUs",
                         f"sudo -i applctl config set gpu.device_group {_group_name(max(gids))} && "
                         "sudo applctl reload")
        return Check(name, True, "only root may open them")
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return Check(name, False, f"gpu.device_group {group} does not exist", f"groupadd --system {group}")
    if gids != {gid}:
        return Check(name, False, f"servers holding GPUs get group {group}, but the files are group {shown or 'root'}"
                                  f"{driver}: they cannot open their GPUs",
                     f"NVreg_DeviceFileGID={gid} (see {GPU_EXAMPLE}), or gpu.device_group = the files' group")
    members = sorted(users.members(group))
    if members:
        return Check(name, True, f"members of {group} ({', '.join(members[:5])}) can open every GPU outside the "
                                 "appliance's units", f"gpasswd -d NAME {group}", warning=True)
    return Check(name, True, f"0660 to group {group}, which only servers holding GPUs get")


def check_content_links(cfg: config.Config) -> Check | None:
    """Content links need git on the machine; said when visitors' links are set up
    ([ephemeral] content_hosts), which is when an administrator means to use them."""
    from .link import INSTALL_GIT, git_missing

    hosts = cfg["ephemeral"]["content_hosts"]
    if not hosts:
        return None
    if git_missing():
        return Check("content links", False, "[ephemeral] content_hosts is set, but git is not installed: servers "
                     "cannot fetch a link's repository", INSTALL_GIT.removeprefix("install git (").rstrip(")"))
    return Check("content links", True, f"git is installed; visitors' servers may reach {', '.join(hosts)}")


UNPRIVILEGED_PORT_START = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")


def check_app_port(cfg: config.Config, path: Path = UNPRIVILEGED_PORT_START) -> Check | None:
    """Apps on {port} listen on APP_PORT in a network namespace of their own, so every
    server unit may bind it (the cgroup's bind filter knows no namespaces). That lets
    no server take the machine's own port 80 only while unprivileged uids cannot bind
    it there (docs/security.md, web apps): the daemon cannot see this setting, applctl can."""
    from ..daemon.units import APP_PORT, port_apps

    apps = port_apps(cfg["apps"])
    if not apps:
        return None
    name = "web apps' port"
    try:
        start = int(path.read_text())
    except (OSError, ValueError) as e:
        return Check(name, True, f"cannot read {path} ({e}), so whether servers may bind port {APP_PORT} of this "
                     "machine is unknown", warning=True)
    if start > APP_PORT:
        return Check(name, True, f"servers cannot bind port {APP_PORT} of this machine "
                                 f"(net.ipv4.ip_unprivileged_port_start = {start})")
    return Check(name, False, f"net.ipv4.ip_unprivileged_port_start is {start}, so while {', '.join(apps)} listen on "
                 f"{{port}}, every person's server may bind port {APP_PORT} of this machine (where a web server in "
                 "front would listen)", "echo net.ipv4.ip_unprivileged_port_start=1024 | sudo tee "
                 "/etc/sysctl.d/60-unprivileged-ports.conf && sudo sysctl --system; or give those apps {unix_socket}")


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
    checks = [first, check_password(), check_sudoers(), check_state(), check_units(), check_daemon()]
    if cfg is not None:
        checks += [check_hub(cfg), check_proxy(cfg), check_ports(cfg), check_root_equivalent(cfg)]
        checks += [c for c in [check_content_links(cfg), check_app_port(cfg)] if c]
    checks.append(check_gpus())
    if cfg is not None:
        checks.append(check_gpu_devices(cfg))
    ok = all(c.ok for c in checks)
    lines = []
    for c in checks:
        word = "FAIL" if not c.ok else "warn" if c.warning else "ok"
        lines.append(f"{paint(word)}{' ' * (4 - len(word))}  {c.name}: {c.detail}")
        if c.fix and (c.warning or not c.ok):
            lines.append(f"      fix: {c.fix}")
    lines.append("")
    lines.append("everything looks right" if ok else f"{sum(not c.ok for c in checks)} problem(s) found")
    emit(as_json, {"ok": ok, "checks": [asdict(c) for c in checks]}, "\n".join(lines))
    sys.exit(0 if ok else 1)
