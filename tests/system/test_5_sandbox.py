"""The sandbox of user servers, attacked from inside them on the booted appliance.

An account's server: another user's home of mode 0755 and their processes are out
of sight (ProtectHome=tmpfs with the own home bound back, ProtectProc=invisible),
while the own home works. A visitor's server (ephemeral mode, anonymous): no user
namespace, no /srv or /opt but the shared folder, no core dump, a kernel that still
runs under the system call filter, and the network [ephemeral] network allows, never
cloud metadata.
"""

from __future__ import annotations

import json

import pytest
from booted import HUB_PY, free_port
from browser import Browser
from visitor_client import arrive

PASSWORD = "sandbox-pass-5"
ANN, BEN = "sbxann", "sbxben"
SHARED = "/srv/workshop"
METADATA = "169.254.169.254"
SERVICES: dict[str, int] = {}  # the machine's own services for visitors to try: address -> port

# Run in a kernel: can this process connect to each (host, port)? "connected", or why not.
REACH = """
import json, socket
def reach(host, port):
    s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
    s.settimeout(3)
    try:
        s.connect((host, port)); return 'connected'
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()
print(json.dumps({f'{h}:{p}': reach(h, p) for h, p in TARGETS}))
"""


def account(app, name: str) -> None:
    app.sh(f"id {name} >/dev/null 2>&1 || (useradd -m {name} && echo {name}:{PASSWORD} | chpasswd "
           f"&& applctl adduser {name} >/dev/null)")


def test_an_accounts_server_sees_its_own_home_and_no_other_users_home_or_process(appliance):
    app = appliance
    account(app, ANN)
    account(app, BEN)
    app.sh(f"chmod 755 /home/{BEN} && echo 'ben only' > /home/{BEN}/notes.txt && chown {BEN}: /home/{BEN}/notes.txt")
    app.sh(f"systemctl stop sbx-ben-sleep 2>/dev/null; systemd-run -q --unit=sbx-ben-sleep --uid={BEN} sleep 600")
    ben_pid = app.unit_props("sbx-ben-sleep.service", "MainPID")["MainPID"]
    # Outside a server, as on any Debian: 0755 homes and /proc are open to every account.
    assert app.sh(f"cat /home/{BEN}/notes.txt", user=ANN).stdout.strip() == "ben only"
    assert app.sh(f"test -e /proc/{ben_pid}", user=ANN, check=False).returncode == 0
    b = Browser(app.url)
    b.login_and_start(ANN, PASSWORD)
    b.wait_for_server(ANN)
    out = b.execute(ANN, b.start_kernel(ANN), f"""
import json, os
def can(f):
    try:
        return f()
    except OSError as e:
        return type(e).__name__
open(os.path.expanduser('~/mine.txt'), 'w').write('ann wrote this')
print(json.dumps({{
    'home': sorted(os.listdir('/home')),
    'ben': can(lambda: os.listdir('/home/{BEN}')),
    'notes': can(lambda: open('/home/{BEN}/notes.txt').read()),
    'ben_process': os.path.exists('/proc/{ben_pid}'),
    'uids': sorted({{os.stat('/proc/' + p).st_uid for p in os.listdir('/proc') if p.isdigit()}}),
    'cwd': os.getcwd(),
}}))""")
    got = json.loads(out)
    ann_uid = int(app.sh(f"id -u {ANN}").stdout)
    assert got["home"] == [ANN], got  # nobody else's home is there to list
    assert got["ben"] == got["notes"] == "FileNotFoundError", got
    assert got["ben_process"] is False and got["uids"] == [ann_uid], got  # only ann's own processes
    assert got["cwd"] == f"/home/{ANN}"
    # The own home is the real one, not the empty tmpfs.
    assert app.sh(f"cat /home/{ANN}/mine.txt").stdout == "ann wrote this"
    app.sh(f"applctl stop {ANN}; systemctl stop sbx-ben-sleep")


@pytest.fixture(scope="module")
def workshop(appliance):
    """Ephemeral mode, with the default network ("loopback"), a shared folder under
    /srv, data of the machine's own beside it and one folder of /opt shown to
    visitors (ephemeral.visible_paths), and three services of the machine: on
    127.0.0.1, on another loopback address and on its global address."""
    app = appliance
    app.sh(f"mkdir -p {SHARED} /srv/private /opt/private /opt/shown && echo 'lesson one' > {SHARED}/README.txt "
           "&& echo 'not for visitors' | tee /srv/private/secret.txt > /opt/private/secret.txt "
           "&& echo 'a tool' > /opt/shown/tool.txt")
    glob = app.sh("ip -4 -o addr show scope global").stdout.split()[3].split("/")[0]
    for i, host in enumerate(("127.0.0.1", "127.0.0.2", glob)):
        port = free_port()
        app.sh(f"systemctl stop sbx-service{i} 2>/dev/null; systemd-run -q --unit=sbx-service{i} -p DynamicUser=yes "
               f"{HUB_PY} -m http.server --bind {host} {port}")
        SERVICES[host] = port
    for host, port in SERVICES.items():  # each answers root, outside any sandbox
        app.ct.wait_for(f"{HUB_PY} -c \"import socket; socket.create_connection(('{host}', {port}), 3)\"")
    workshop_config(app, "")
    yield app
    app.sh("systemctl stop sbx-service0 sbx-service1 sbx-service2", check=False)
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text())
    app.sh("applctl reload", check=False)


def workshop_config(app, network: str) -> None:
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text(
        f'mode = "ephemeral"\n[ephemeral]\nwarm_pool = 0\nshared_dir = "{SHARED}"\n'
        f'visible_paths = ["/opt/shown"]\n{network}'))
    app.sh("applctl reload")
    app.wait_hub()


def visitor_reaches(app, targets: list[tuple[str, int]]) -> dict[str, str]:
    b, name, _ = arrive(app)
    out = b.execute(name, b.start_kernel(name), f"TARGETS = {targets!r}\n" + REACH)
    app.sh(f"applctl stop {name}")
    return json.loads(out)


def test_a_visitor_makes_no_namespace_sees_no_data_but_the_shared_folder_and_dumps_no_core(workshop):
    app = workshop
    b, name, _ = arrive(app)
    out = b.execute(name, b.start_kernel(name), """
import json, multiprocessing, os, resource, subprocess
def can(f):
    try:
        return f()
    except (OSError, ValueError) as e:
        return type(e).__name__
unshare = subprocess.run(['unshare', '-U', '-r', 'id', '-u'], capture_output=True, text=True)
with multiprocessing.Pool(2) as pool:  # processes, pipes and threads under the system call filter
    squares = pool.map(abs, [-3, -4])
print(json.dumps({
    'unshare': [unshare.returncode, unshare.stdout.strip(), unshare.stderr.strip()],
    'srv': can(lambda: os.listdir('/srv')),
    'srv_secret': can(lambda: open('/srv/private/secret.txt').read()),
    'opt': can(lambda: os.listdir('/opt')),
    'opt_secret': can(lambda: open('/opt/private/secret.txt').read()),
    'shared': open(os.path.expanduser('~/shared/README.txt')).read().strip(),
    'shown': open('/opt/shown/tool.txt').read().strip(),
    'shown_write': can(lambda: open('/opt/shown/mine.txt', 'w')),
    'home': os.listdir('/home'),
    'core': resource.getrlimit(resource.RLIMIT_CORE),
    'raise_core': can(lambda: resource.setrlimit(resource.RLIMIT_CORE, (1 << 20, 1 << 20))),
    'pool': squares,
}))""")
    got = json.loads(out)
    assert got["unshare"][0] != 0 and "Operation not permitted" in got["unshare"][2], got  # no user namespace
    assert got["srv"] == got["srv_secret"] == "PermissionError", got  # /srv is inaccessible
    # /opt, which holds a visible path, is an empty tmpfs with that path bound in
    assert got["opt"] == ["shown"] and got["opt_secret"] == "FileNotFoundError", got
    assert got["shared"] == "lesson one", got  # the shared folder, though under /srv
    assert got["shown"] == "a tool" and got["shown_write"] == "OSError", got  # ephemeral.visible_paths, read-only
    assert got["home"] == [], got
    assert got["core"] == [0, 0] and got["raise_core"] == "ValueError", got
    assert got["pool"] == [3, 4], got
    props = app.unit_props(f"jupyter-{name}.service", "LimitCORE", "LogRateLimitBurst", "RestrictNamespaces")
    assert props == {"LimitCORE": "0", "LogRateLimitBurst": "500", "RestrictNamespaces": "yes"}, props
    app.sh(f"applctl stop {name}")


def test_a_visitor_reaches_loopback_by_default_the_internet_only_if_allowed_and_never_cloud_metadata(workshop):
    app = workshop
    lo, lo2, glob = (f"{host}:{port}" for host, port in SERVICES.items())
    services = list(SERVICES.items())
    metadata = [(METADATA, 80), ("fd00:ec2::254", 80)]
    root = json.loads(app.sh(f"{HUB_PY} -", input=f"TARGETS = {metadata!r}\n{REACH}").stdout)
    print(f"\nroot, outside any sandbox, reaches: {root}")

    got = visitor_reaches(app, services + metadata)  # the default: "loopback"
    assert got[lo] == got[lo2] == "connected", got
    assert got[glob] != "connected", got  # this machine, but not on loopback
    assert got[f"{METADATA}:80"] != "connected" and got["fd00:ec2::254:80"] != "connected", got

    workshop_config(app, 'network = "internet"\n')
    got = visitor_reaches(app, services + metadata)
    assert got[glob] == "connected", got
    assert got[f"{METADATA}:80"] != "connected" and got["fd00:ec2::254:80"] != "connected", (got, root)

    workshop_config(app, 'network = "none"\n')
    got = visitor_reaches(app, services)
    # 127.0.0.1 only, where the proxy and the hub's API are (and, README says, any service there).
    assert got[lo] == "connected", got
    assert got[lo2] != "connected" and got[glob] != "connected", got
    workshop_config(app, "")


def test_a_bad_network_value_is_refused_by_name_and_changes_nothing(workshop):
    app = workshop
    r = app.sh("applctl config set ephemeral.network everywhere", check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr, (r.stdout, r.stderr)
    said = r.stdout + r.stderr
    assert "ephemeral.network" in said and '"none", "loopback", "internet"' in said, said
    assert "everywhere" not in app.sh("cat /etc/jupyterhub/appliance.toml").stdout
