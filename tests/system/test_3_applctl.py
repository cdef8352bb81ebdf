"""applctl, the administrator's command line, on the booted appliance.

The tests share one container and run in order, as an administrator's day would:
grant access, change the configuration, apply it, look at servers and GPUs, take
access away. Their accounts (kim, lena, nora, omar, pia) are their own; the
configuration is restored when the module ends.
"""

from __future__ import annotations

import html
import json
import re
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import requests
from booted import free_port
from browser import login

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fake_nvml"))
from build import build  # noqa: E402

PASSWORD = "applctl-pass-1"
CONFIG = "/etc/jupyterhub/appliance.toml"
VENV = "/opt/envs/py311"
BAD_NAMES = [("root", "root can never have a server"),
             ("../x", "'../x' is not a valid user name"),
             ("'a b'", "'a b' is not a valid user name"),
             ("x" * 300, "is not a valid user name: a user name is 1 to 32 characters"),
             ("nosuchuser", "there is no user nosuchuser on this machine")]


def applctl(app, args: str, user: str | None = None):
    """Run applctl; every refusal must be words, never a traceback."""
    r = app.sh(f"applctl {args}", user=user, check=False)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    return r


def ok(app, args: str, user: str | None = None) -> str:
    r = applctl(app, args, user)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def refused(app, args: str, user: str | None = None, code: int = 1) -> str:
    r = applctl(app, args, user)
    assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
    assert 1 <= len(r.stderr.splitlines()) <= 2, r.stderr
    return r.stderr


def main_pid(app, unit: str) -> str:
    return app.unit_props(unit, "MainPID")["MainPID"]


def hub_get(app, path: str, token: str) -> requests.Response:
    return requests.get(f"{app.url}/hub/api{path}", headers={"Authorization": f"token {token}"}, timeout=30)


def wait_answer(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=3)
            return
        except requests.RequestException:
            time.sleep(0.3)
    raise AssertionError(f"nothing answers on {url} after {timeout} s")


@pytest.fixture(scope="module", autouse=True)
def app(appliance):
    saved = appliance.sh(f"cat {CONFIG}").stdout
    for name in ("lena", "nora"):
        appliance.sh(f"id {name} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {name}")
        appliance.sh("chpasswd", input=f"{name}:{PASSWORD}\n")
    yield appliance
    appliance.ct.write(CONFIG, saved)
    appliance.sh("rm -rf /usr/local/share/jupyter/kernels /etc/jupyterhub/jupyterhub_config.d/50-broken.py")
    appliance.sh("applctl reload")
    appliance.wait_hub()


# --- help and access ---------------------------------------------------------------------

def test_every_command_has_help_with_an_example(app):
    commands = ["adduser", "deluser", "users", "admin", "admin add", "admin remove", "stop", "servers", "status",
                "gpus", "config", "config show", "config get", "config set", "config unset", "config validate",
                "config edit", "reload", "token", "kernels", "kernels list", "kernels add", "kernels remove",
                "logs", "doctor"]
    listed = ok(app, "--help")
    for name in {c.split()[0] for c in commands}:
        assert re.search(rf"^  {name} ", listed, re.M), name
    out = app.sh("; ".join(f"applctl {c} --help | grep -c '^  Example:$'" for c in commands)).stdout
    assert out.split() == ["1"] * len(commands)


def test_adduser_create_admin_and_gpu_quota_then_users(app):
    out = json.loads(ok(app, "adduser --create --admin --gpus 1 --json kim"))
    assert out == {"user": "kim", "created": True, "added_to": ["jupyterhub-users", "jupyterhub-admins"], "gpus": 1}
    app.sh("chpasswd", input=f"kim:{PASSWORD}\n")
    assert ok(app, "adduser lena") == "lena can now log in to JupyterHub\n"
    assert ok(app, "adduser nora") == "nora can now log in to JupyterHub\n"
    assert ok(app, "adduser nora") == "nora already had this access; nothing changed\n"
    assert ok(app, "config get gpu.quota_users.kim") == "1\n"
    assert app.sh("getent passwd kim").stdout.split(":")[4] == "created by applctl (jupyterhub-appliance)"
    users = {u["user"]: u for u in json.loads(ok(app, "users --json"))}
    assert users["kim"] == {"user": "kim", "admin": True, "server": "stopped", "gpus": [], "last_activity": None,
                              "limits": {"mem": None, "cpu": None, "tasks": None}}
    assert users["nora"]["admin"] is False
    table = ok(app, "users").splitlines()
    assert re.split(r"\s{2,}", table[0]) == ["USER", "ADMIN", "SERVER", "GPUS", "LIMITS", "LAST ACTIVITY"]
    assert any(re.split(r"\s{2,}", line) == ["kim", "yes", "stopped", "-", "-", "never"] for line in table)


@pytest.mark.parametrize("command", ["adduser", "deluser", "admin add", "admin remove", "stop", "token",
                                     "logs --user"])
def test_bad_names_are_refused_and_change_nothing(app, command):
    state = "getent group jupyterhub-users jupyterhub-admins; getent passwd | wc -l; md5sum " + CONFIG
    before = app.sh(state).stdout
    for name, says in BAD_NAMES:
        err = refused(app, f"{command} {name}")
        assert err.startswith("applctl: ") and says in err, (command, name, err)
    assert app.sh(state).stdout == before


def test_a_member_who_is_not_admin_is_told_to_use_sudo(app):
    for args in ["adduser x", "deluser lena", "users", "admin add lena", "stop lena", "stop --all", "servers",
                 "gpus", "config set hub.log_level DEBUG", "config unset hub.log_level", "config edit", "reload",
                 "token lena", "kernels add --name k --python /usr/bin/python3", "kernels remove k", "logs",
                 "doctor"]:
        err = refused(app, args, user="nora")
        assert "needs root" in err and "sudo applctl" in err and "jupyterhub-admins" in err, (args, err)
    # Reading is for everyone; sudo is for admins only.
    assert ok(app, "config get hub.port", user="nora") == f"{app.port}\n"
    assert "URL:" in applctl(app, "status", user="nora").stdout
    denied = app.sh("sudo -S -p '' applctl users", user="nora", input=f"{PASSWORD}\n", check=False)
    assert denied.returncode != 0 and "nora is not in the sudoers file" in denied.stderr
    users = json.loads(app.sh("sudo -S -p '' applctl users --json", user="kim", input=f"{PASSWORD}\n").stdout)
    assert {"kim", "nora"} <= {u["user"] for u in users}


# --- configuration -----------------------------------------------------------------------

def test_config_set_get_unset_keep_comments_and_refuse_bad_values(app):
    app.ct.write(CONFIG, app.config_text("\n[spawner]\n# Memory limit of each server.\n# mem_limit = \"\"\n"))
    out = ok(app, "config set spawner.mem_limit 2G")
    assert out == 'spawner.mem_limit = "2G" (was "" by default); apply it with: sudo applctl reload\n'
    text = app.sh(f"cat {CONFIG}").stdout
    assert '# Memory limit of each server.\n# mem_limit = ""\nmem_limit = "2G"\n' in text
    assert text.startswith(app.config_text())
    assert ok(app, "config get spawner.mem_limit") == "2G\n"
    for args, says in [("spawner.mem_limit lots", "spawner.mem_limit = 'lots' is not accepted: a size such as"),
                       ("hub.port 70000", "hub.port = 70000 is not accepted: an integer from 1 to 65535"),
                       ("hub.nope 1", "hub.nope = 1 is not accepted: known keys in [hub] are port,"),
                       ("culler.enabled maybe", "culler.enabled = 'maybe' is not accepted: true or false"),
                       ("'a b' 1", "'a b' is not a configuration key")]:
        err = refused(app, f"config set {args}")
        assert says in err, err
        assert app.sh(f"cat {CONFIG}").stdout == text
    assert app.sh("ls -A /etc/jupyterhub").stdout.split() == ["appliance.toml", "jupyterhub_config.d",
                                                            "jupyterhub_config.py"]  # no temp file, no lock file
    effective = json.loads(ok(app, "config show --effective --json"))
    assert effective["spawner"]["mem_limit"] == "2G" and effective["culler"]["timeout"] == 3600
    assert "timeout = 3600 # default" in ok(app, "config show --effective")
    assert ok(app, "config show") == text
    assert ok(app, "config unset spawner.mem_limit").startswith('spawner.mem_limit removed: back to its default ""')
    assert ok(app, "config unset spawner.mem_limit") == f"spawner.mem_limit is not set in {CONFIG}; nothing changed\n"
    assert "hub.prot is not a configuration key" in refused(app, "config get hub.prot")


def test_concurrent_config_sets_both_land(app):
    app.sh("applctl config set culler.timeout 7200 & applctl config set spawner.start_timeout 300 & "
           "applctl config set hub.log_level DEBUG & wait")
    assert (ok(app, "config get culler.timeout"), ok(app, "config get spawner.start_timeout"),
            ok(app, "config get hub.log_level")) == ("7200\n", "300\n", "DEBUG\n")


def test_config_edit_saves_only_a_valid_file(app):
    app.ct.write("/usr/local/bin/bad-editor", "#!/bin/sh\nprintf '\\n[daemon]\\nmin_uid = 0\\n' >> \"$1\"\n", 0o755)
    app.ct.write("/usr/local/bin/good-editor", "#!/bin/sh\nprintf '\\n[daemon]\\n# ours\\nmin_uid = 2000\\n' >> \"$1\"\n",
                 0o755)
    before = app.sh(f"cat {CONFIG}").stdout
    r = app.sh("EDITOR=bad-editor applctl config edit </dev/null", check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert "daemon.min_uid = 0 is not accepted" in lines[0]
    assert re.fullmatch(rf"applctl: not saved: {CONFIG} is unchanged; your version is in /tmp/applctl-edit-\w+/"
                        r"appliance\.toml", lines[1])
    assert app.sh(f"cat {CONFIG}").stdout == before
    assert "min_uid = 0" in app.sh(f"cat {lines[1].rsplit(' ', 1)[1]}").stdout  # the edit is not lost
    out = app.sh("EDITOR=good-editor applctl config edit").stdout
    assert out == f"{CONFIG} saved; apply it with: sudo applctl reload\n"
    assert app.sh(f"cat {CONFIG}").stdout == before + "\n[daemon]\n# ours\nmin_uid = 2000\n"
    assert app.sh("EDITOR=true applctl config edit").stdout == f"no changes; {CONFIG} is unchanged\n"
    ok(app, "config unset daemon.min_uid")


# --- reload --------------------------------------------------------------------------------

def test_reload_restarts_the_hub_but_not_the_proxy(app):
    hub, proxy = main_pid(app, "jupyterhub.service"), main_pid(app, "jupyterhub-proxy.service")
    ok(app, "config set spawner.default_url /tree")
    out = ok(app, "reload")
    assert out.startswith("restarted ") and "jupyterhub.service" in out.splitlines()[0]
    assert "the proxy kept running (its settings did not change)" in out
    assert re.search(rf"the hub answers on 127\.0\.0\.1:{app.hub_port} after [0-9.]+ s", out)
    assert main_pid(app, "jupyterhub.service") != hub
    assert main_pid(app, "jupyterhub-proxy.service") == proxy
    assert requests.get(app.url + "/hub/api/", timeout=10).status_code == 200
    data = json.loads(ok(app, "reload --json"))
    assert data["proxy_restarted"] is False and "jupyterhub.service" in data["restarted"]


def test_reload_restarts_the_proxy_when_its_port_changes(app):
    proxy = main_pid(app, "jupyterhub-proxy.service")
    port = free_port()
    ok(app, f"config set hub.port {port}")
    out = ok(app, "reload")
    assert out.startswith("restarted jupyterhub-proxy.service")
    assert main_pid(app, "jupyterhub-proxy.service") != proxy
    assert requests.get(f"http://127.0.0.1:{port}/hub/api/", timeout=10).status_code == 200
    ok(app, f"config set hub.port {app.port}")
    ok(app, "reload")
    assert requests.get(app.url + "/hub/api/", timeout=10).status_code == 200


def test_reload_refuses_an_invalid_file_and_restarts_nothing(app):
    hub = main_pid(app, "jupyterhub.service")
    good = app.sh(f"cat {CONFIG}").stdout
    app.ct.write(CONFIG, app.config_text("\n[culler]\nenabled = \"yes\"\n"))
    try:
        err = refused(app, "reload")
        assert "culler.enabled = 'yes' is not accepted: true or false" in err
        assert err.splitlines()[1] == "nothing was restarted; fix it with: sudo applctl config edit"
        assert main_pid(app, "jupyterhub.service") == hub
    finally:
        app.ct.write(CONFIG, good)


def test_reload_says_why_the_hub_did_not_come_up(app):
    app.ct.write("/etc/jupyterhub/jupyterhub_config.d/50-broken.py", 'raise RuntimeError("broken on purpose")\n')
    try:
        r = applctl(app, "reload --timeout 60")
        assert r.returncode == 1
        assert r.stderr.startswith("applctl: jupyterhub.service did not come up")
        assert "its journal says:" in r.stderr and "RuntimeError: broken on purpose" in r.stderr
    finally:
        app.sh("rm -f /etc/jupyterhub/jupyterhub_config.d/50-broken.py")
    ok(app, "reload")
    app.wait_hub()


# --- servers, users, tokens, admins ----------------------------------------------------------

def test_servers_and_users_show_a_running_server(app):
    ok(app, "config set spawner.default_url /lab")
    ok(app, "reload")
    login(app, "kim", PASSWORD).wait_for_server("kim")
    rows = {r["user"]: r for r in json.loads(ok(app, "servers --json"))}
    assert rows["kim"]["unit"] == "jupyter-kim.service" and rows["kim"]["state"] == "active"
    assert rows["kim"]["uptime_seconds"] > 0 and "memory_bytes" in rows["kim"] and rows["kim"]["gpus"] == []
    line = next(line for line in ok(app, "servers").splitlines() if line.startswith("kim "))
    assert re.split(r"\s{2,}", line)[:3] == ["kim", "jupyter-kim.service", "active"]
    kim = next(u for u in json.loads(ok(app, "users --json")) if u["user"] == "kim")
    assert kim["server"] == "active" and kim["last_activity"] is not None


def test_stop_one_server_and_the_hub_forgets_it(app):
    admin = ok(app, "token --service").strip()
    assert hub_get(app, "/users/kim", admin).json()["servers"]
    assert ok(app, "stop kim") == "stopped kim's server\n"
    assert app.sh("systemctl is-active jupyter-kim.service", check=False).stdout.strip() != "active"
    assert hub_get(app, "/users/kim", admin).json()["servers"] == {}
    assert ok(app, "stop kim") == "kim has no running server; nothing to stop\n"
    assert "applctl stop: give one user NAME or --all" in refused(app, "stop", code=2)


def test_stop_all(app):
    for name in ("kim", "nora"):
        login(app, name, PASSWORD).wait_for_server(name)
    out = json.loads(ok(app, "stop --all --json"))
    assert {"kim", "nora"} <= set(out["stopped"]) and out["not_running"] == []
    assert json.loads(ok(app, "servers --json")) == []
    assert ok(app, "stop --all") == "no server is running; nothing to stop\n"


def test_token_for_a_user_works_and_is_limited_as_asked(app):
    token = ok(app, "token nora").strip()
    assert re.fullmatch(r"[0-9a-f]{32}", token)
    assert hub_get(app, "/user", token).json()["name"] == "nora"
    narrow = json.loads(ok(app, "token --scopes 'read:users:name!user=nora' --expires-in 1h --json nora"))
    assert narrow["user"] == "nora" and "read:users:name!user=nora" in narrow["scopes"]
    expires = datetime.fromisoformat(narrow["expires_at"].replace("Z", "+00:00")).timestamp()
    assert 3500 < expires - time.time() < 3700
    assert hub_get(app, "/users/nora", narrow["token"]).status_code == 200
    assert hub_get(app, "/users/nora/tokens", narrow["token"]).status_code == 403
    assert "Scope 'bogus:scope' for token does not exist" in refused(app, "token --scopes bogus:scope nora")
    assert "--expires-in: 'soon' is not accepted" in refused(app, "token --expires-in soon nora")
    assert hub_get(app, "/users", token).status_code == 403  # a user's token, not an admin's


def test_token_for_a_member_who_never_logged_in(app):
    admin = ok(app, "token --service").strip()
    assert hub_get(app, "/users/lena", admin).status_code == 404  # the hub has no record of lena yet
    assert hub_get(app, "/user", ok(app, "token lena").strip()).json()["name"] == "lena"


def test_token_for_someone_without_access_is_refused(app):
    assert "bob has no access to JupyterHub; grant it first: applctl adduser bob" in refused(app, "token bob")


def test_admin_add_and_remove_take_effect_in_the_hub_at_once(app):
    admin = ok(app, "token --service").strip()
    assert ok(app, "admin add nora") == "nora is now a hub admin\n"
    assert "nora" in app.sh("getent group jupyterhub-admins").stdout
    assert hub_get(app, "/users/nora", admin).json()["admin"] is True
    assert ok(app, "admin add nora") == "nora is already a hub admin; nothing changed\n"
    nora_token = ok(app, "token nora").strip()
    r = applctl(app, "admin remove nora")
    assert r.returncode == 0 and r.stderr == "", (r.stdout, r.stderr)  # a note there: the revocation waits
    revoked = re.match(r"nora is no longer a hub admin; revoked (\d+) API token\(s\) of theirs", r.stdout)
    assert revoked and int(revoked[1]) >= 1, r.stdout
    assert hub_get(app, "/users/nora", admin).json()["admin"] is False
    assert hub_get(app, "/user", nora_token).status_code in (401, 403)  # tokens issued while admin are gone
    assert json.loads(ok(app, "admin remove --json nora")) == {"user": "nora", "admin": False, "changed": False,
                                                             "hub_updated": True, "tokens_revoked": 0,
                                                             "issued_tokens_revoked": 0}
    assert "omar" not in app.sh("getent group jupyterhub-admins").stdout
    app.sh("id omar >/dev/null 2>&1 || useradd -m omar")
    assert "omar has no access to JupyterHub; give it with admin rights: applctl adduser --admin omar" in \
        refused(app, "admin add omar")


# --- kernels and logs -----------------------------------------------------------------------

def test_kernels_add_an_existing_venv_for_every_user(app):
    # A venv whose ipykernel comes from the appliance's user environment, as a conda
    # env or venv of the administrator's would bring its own.
    # The release's python (3.13 on Debian 13, 3.11 on Debian 12), as the package's venvs.
    pyver = app.sh("python3 -c 'import sys; print(*sys.version_info[:2], sep=\".\")'").stdout.strip()
    app.sh(f"python3 -m venv --without-pip {VENV} && echo /usr/lib/jupyterhub-appliance/user/lib/python{pyver}/"
           f"site-packages > {VENV}/lib/python{pyver}/site-packages/userenv.pth")
    out = ok(app, f"kernels add --name py311 --python {VENV}/bin/python")
    assert re.fullmatch(rf"kernel py311 \(Python {re.escape(pyver)}\.\d+ \(py311\), venv, ipykernel [0-9.]+\) is now "
                        r"offered to every user\n", out)
    assert ok(app, f"kernels add --name py311 --python {VENV}/bin/python") == \
        f"kernel py311 already runs {VENV}/bin/python; nothing changed\n"
    listed = {k["name"]: k for k in json.loads(ok(app, "kernels list --json", user="nora"))}
    assert listed["py311"]["source"] == "applctl" and listed["python3"]["source"] == "built-in"
    b = login(app, "nora", PASSWORD)
    b.wait_for_server("nora")
    r = b.s.post(f"{app.url}/user/nora/api/kernels", json={"name": "py311"}, headers=b._xsrf_headers("nora"),
                 timeout=60)
    assert r.status_code == 201, r.text[:300]
    assert b.execute("nora", r.json()["id"], "import sys, os; print(sys.prefix, os.getuid() != 0)").strip() == \
        f"{VENV} True"


@pytest.mark.parametrize("python, says", [
    ("/usr/bin/python3", "/usr/bin/python3 has no ipykernel; install it into that environment"),
    ("/etc/passwd", "--python /etc/passwd is not an executable file"),
    ("/opt/nothing/bin/python", "--python /opt/nothing/bin/python: no such file"),
    ("bin/python", "give the absolute path of the interpreter"),
    ("/root/private/bin/python", "an ordinary user may not run it (permission denied)"),
])
def test_kernels_add_refuses_what_cannot_be_a_kernel(app, python, says):
    app.sh("mkdir -p /root/private/bin && cp /usr/bin/python3 /root/private/bin/python && chmod 700 /root")
    assert says in refused(app, f"kernels add --name other --python {python}")
    assert "other" not in ok(app, "kernels list")


def test_kernels_remove(app):
    assert "kernel python3 is not one applctl manages" in refused(app, "kernels remove python3")
    assert ok(app, "kernels remove py311") == "kernel py311 removed\n"
    assert ok(app, "kernels remove py311") == "there is no kernel py311; nothing changed\n"
    assert "py311" not in ok(app, "kernels list")


def test_a_conda_environment_kernel_runs_its_activation_and_a_users_own_kernel_works(app):
    # A conda-shaped prefix: a venv (its ipykernel from the user environment, as in
    # the test above) with conda-meta/ and an activation script, as conda makes them.
    pyver = app.sh("python3 -c 'import sys; print(*sys.version_info[:2], sep=\".\")'").stdout.strip()
    conda = "/opt/conda/envs/demo"
    app.sh(f"python3 -m venv --without-pip {conda} && echo /usr/lib/jupyterhub-appliance/user/lib/python{pyver}/"
           f"site-packages > {conda}/lib/python{pyver}/site-packages/userenv.pth && "
           f"mkdir -p {conda}/conda-meta {conda}/etc/conda/activate.d && "
           f"echo 'export DEMO_ACTIVATED=yes-$CONDA_DEFAULT_ENV' > {conda}/etc/conda/activate.d/demo.sh")
    assert ", conda, ipykernel " in ok(app, f"kernels add demo --env {conda}")
    listed = {k["name"]: k for k in json.loads(ok(app, "kernels list --json"))}
    assert (listed["demo"]["kind"], listed["demo"]["python_version"].rsplit(".", 1)[0]) == ("conda", pyver)
    assert re.search(r"demo\s+Python [0-9.]+ \(demo\)\s+conda\s+" + re.escape(pyver), ok(app, "kernels list"))
    b = login(app, "nora", PASSWORD)
    b.wait_for_server("nora")

    def run_in(kernel: str, code: str) -> str:
        r = b.s.post(f"{app.url}/user/nora/api/kernels", json={"name": kernel}, headers=b._xsrf_headers("nora"),
                     timeout=60)
        assert r.status_code == 201, r.text[:300]
        return b.execute("nora", r.json()["id"], code).strip()

    assert run_in("demo", "import os, sys; print(os.environ.get('DEMO_ACTIVATED'), sys.prefix)") == \
        f"yes-demo {conda}"
    # A user's own kernel, as README tells them: ipykernel install --user, from any environment of theirs.
    run_in("python3", "import subprocess, sys; subprocess.run([sys.executable, '-m', 'ipykernel', 'install', "
                      "'--user', '--name', 'mine', '--env', 'MINE', 'nora-own'], check=True)")
    specs = b.s.get(f"{app.url}/user/nora/api/kernelspecs", timeout=30).json()["kernelspecs"]
    assert {"mine", "demo", "python3"} <= set(specs)
    assert run_in("mine", "import os; print(os.environ.get('MINE'))") == "nora-own"
    assert "mine" not in ok(app, "kernels list")  # hers alone: not offered to everyone
    assert ok(app, "kernels remove demo") == "kernel demo removed\n"


def test_logs_of_the_hub_of_a_server_and_following(app):
    assert "JupyterHub" in ok(app, "logs --unit hub -n 20")
    assert "jupyter-nora.service" in ok(app, "logs --user nora")
    assert "is not a time journalctl understands" in refused(app, "logs --since 'not a time'")
    follow = app.sh("timeout 3 applctl logs --unit proxy --follow -n 2", check=False)
    assert follow.returncode == 124 and "ConfigProxy" in follow.stdout  # still following when stopped
    assert "applctl logs: give --user or --unit, not both" in refused(app, "logs --user nora --unit hub", code=2)


# --- status and doctor ---------------------------------------------------------------------

def test_status_exit_code_follows_the_proxy(app):
    data = json.loads(ok(app, "status --json"))
    assert data["problems"] == [] and data["url"].endswith(f":{app.port}/") and data["hub_api"] is True
    assert data["units"]["jupyterhub-proxy.service"] == "active" and re.fullmatch(r"\d+\.\d+\.\d+", data["jupyterhub"])
    # What the appliance's own services hold in memory: the hub (with its services)
    # and the proxy run always; the daemon and the password checker when asked.
    memory = data["memory"]
    assert memory["jupyterhub.service"] > 20 << 20 and memory["jupyterhub-proxy.service"] > 10 << 20, memory
    print("idle footprint, MiB:", {u: round(n / 2**20) for u, n in memory.items()}, round(sum(memory.values()) / 2**20))
    # The culler, the reclaimer and the dashboard run in the hub's process (hub/services.py):
    # one interpreter, not four (issue 27: 337 MiB in all before, 206 after; docs/benchmarks.md).
    assert len(app.sh("cat /sys/fs/cgroup/system.slice/jupyterhub.service/cgroup.procs").stdout.split()) == 1
    assert sum(memory.values()) < 260 << 20, memory
    app.sh("systemctl stop jupyterhub-proxy")
    try:
        r = applctl(app, "status")
        assert r.returncode == 1
        assert re.search(r"^problem: jupyterhub-proxy.service is (inactive|failed)$", r.stdout, re.M)
        assert f"problem: nothing answers on the public port {app.port}" in r.stdout
    finally:
        app.sh("systemctl start jupyterhub-proxy")
    app.wait_hub()
    assert applctl(app, "status").returncode == 0


def test_status_shows_a_reverse_proxy_and_its_failure(app):
    app.ct.write("/etc/systemd/system/nginx.service", "[Service]\nExecStart=/bin/sleep infinity\n")
    app.sh("systemctl daemon-reload && systemctl start nginx")
    try:
        assert json.loads(ok(app, "status --json"))["units"]["nginx.service"] == "active"
        app.sh("systemctl kill --signal=KILL nginx")
        app.ct.wait_for("systemctl is-failed nginx")
        r = applctl(app, "status")
        assert r.returncode == 1 and re.search(r"^nginx\.service +failed$", r.stdout, re.M)
        assert "problem: nginx.service is failed" in r.stdout
    finally:
        app.sh("systemctl reset-failed nginx; rm /etc/systemd/system/nginx.service; systemctl daemon-reload")
    assert "nginx" not in ok(app, "status")


def test_doctor_passes_then_names_each_breakage_and_its_fix(app):
    out = ok(app, "doctor")
    assert out.rstrip().endswith("everything looks right") and "FAIL" not in out
    names = [c["name"] for c in json.loads(ok(app, "doctor --json"))["checks"]]
    assert names == ["configuration", "password check", "sudoers drop-in", "state files", "services", "daemon",
                     "hub API", "proxy", "ports", "root-equivalent accounts", "GPUs", "GPU device files"]
    squat = free_port()
    app.sh("chmod 0644 /var/lib/jupyterhub-appliance/secrets/proxy_token && gpasswd -a jupyterhub shadow >/dev/null && "
           f"systemd-run --unit=squatter python3 -m http.server --bind 127.0.0.1 {squat} && "
           f"cp {CONFIG} /root/doctor.toml")
    try:
        app.ct.wait_for(f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {squat}))\"")
        ok(app, f"config set hub.proxy_api_port {squat}")  # not applied: doctor reads the file
        r = applctl(app, "doctor")
        assert r.returncode == 1
        assert ("FAIL  password check: jupyterhub can read /etc/shadow, so code run in the hub could read every "
                "password hash") in r.stdout
        assert "fix: sudo gpasswd -d jupyterhub shadow && sudo systemctl restart jupyterhub" in r.stdout
        assert ("FAIL  state files: /var/lib/jupyterhub-appliance/secrets/proxy_token has owner root and mode 0644, "
                "not root and 0600") in r.stdout
        assert "applctl doctor --fix" in r.stdout
        assert f"FAIL  ports: port {squat} (hub.proxy_api_port) is taken by python3 (pid " in r.stdout
        assert "squatter.service" in r.stdout
        assert r.stdout.rstrip().endswith("problem(s) found")
    finally:
        app.sh("chmod 0600 /var/lib/jupyterhub-appliance/secrets/proxy_token; gpasswd -d jupyterhub shadow >/dev/null; "
               f"systemctl stop squatter; cp /root/doctor.toml {CONFIG}")
    assert "everything looks right" in ok(app, "doctor")


def test_shell_completion_is_installed_for_bash_and_zsh(app):
    def complete(words: str) -> list[str]:
        script = (f"source /usr/share/bash-completion/completions/applctl; COMP_WORDS=({words}); "
                  f"COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); _applctl_completion applctl; echo ${{COMPREPLY[@]}}")
        return app.sh(f"bash -c {shlex.quote(script)}").stdout.split()
    assert complete("applctl con") == ["config"]
    assert complete("applctl config set spawner.mem") == ["spawner.mem_limit"]
    assert "nora" in complete("applctl deluser n")
    assert app.sh("head -1 /usr/share/zsh/vendor-completions/_applctl").stdout == "#compdef applctl\n"


# --- GPUs (the fake NVML of tests/fake_nvml, as in test_4_gpu) --------------------------------------

GPU_UUID = "GPU-3a000000-0000-0000-0000-00000000000{}"


@pytest.fixture(scope="module")
def gpus(app, tmp_path_factory):
    lib = build(tmp_path_factory.mktemp("fake-nvml-3"))
    app.ct.copy_in(lib, "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1")
    app.ct.write("/etc/fake-nvml.conf", "driver 550.54.14\n" + "".join(
        f"gpu index={i} minor={m} uuid={GPU_UUID.format(i)} name=NVIDIA_L4 mem_total={24 << 30} "
        f"mem_used={(i + 1) << 30} util_gpu={10 * i}\n" for i, m in ((0, 1), (1, 0))))
    nodes = "/dev/nvidia0 /dev/nvidia1 /dev/nvidiactl /dev/nvidia-uvm /dev/nvidia-uvm-tools"
    app.sh("mknod -m 666 /dev/nvidia0 c 195 0; mknod -m 666 /dev/nvidia1 c 195 1; mknod -m 666 /dev/nvidiactl c 195 "
           "255; mknod -m 666 /dev/nvidia-uvm c 509 0; mknod -m 666 /dev/nvidia-uvm-tools c 509 1")
    dropin = "/etc/systemd/system/jupyterhub-appliance.service.d/fake-nvml-3.conf"
    app.ct.write(dropin, "[Service]\nEnvironment=FAKE_NVML_CONFIG=/etc/fake-nvml.conf\n")
    app.sh("systemctl daemon-reload")
    ok(app, "reload")
    yield app
    app.sh("applctl stop --all >/dev/null; rm -f /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1 /etc/fake-nvml.conf "
           f"{dropin} {nodes}; systemctl daemon-reload; systemctl restart jupyterhub-appliance.service")


def test_gpus_status_and_doctor_see_the_gpus(gpus):
    lines = ok(gpus, "gpus").splitlines()
    assert lines[0] == "2 of 2 GPUs free (driver 550.54.14)"
    assert re.split(r"\s{2,}", lines[2]) == ["GPU", "NAME", "MEMORY USED", "UTIL", "HOLDER", "IDLE", "UUID"]
    assert re.split(r"\s{2,}", lines[3]) == ["0", "NVIDIA L4", "1.0G / 24G", "0%", "free", "-", GPU_UUID.format(0)]
    assert "GPUs: 2 of 2 GPUs free (driver 550.54.14)" in ok(gpus, "status")
    assert "ok    GPUs: NVML loads: 2 of 2 GPUs free" in ok(gpus, "doctor")


def test_a_gpu_quota_from_adduser_lets_a_server_hold_a_gpu(gpus):
    gpus.sh("id pia >/dev/null 2>&1 || useradd -m pia")
    gpus.sh("chpasswd", input=f"pia:{PASSWORD}\n")
    ok(gpus, "config set gpu.quota 0")  # GPUs only for those given a quota
    assert "pia may hold 1 GPU at once; apply it with: sudo applctl reload" in ok(gpus, "adduser --gpus 1 pia")
    ok(gpus, "reload")
    b = login(gpus, "pia", PASSWORD)
    form = b.get("/hub/spawn")
    assert "your quota is 1 GPU" in form.text
    action = html.unescape(re.search(r'action="([^"]*/spawn[^"]*)"', form.text).group(1))
    r = b.s.post(gpus.url + action, data={"gpus": "1"}, allow_redirects=False, timeout=120)
    assert r.status_code == 302, r.text[-1500:]
    ready, messages = b.spawn_outcome("pia")
    assert ready, messages
    held = [g for g in json.loads(ok(gpus, "gpus --json"))["gpus"] if g["holder"] == "pia"]
    assert len(held) == 1
    index = f"#{held[0]['index']}"
    pia = next(u for u in json.loads(ok(gpus, "users --json")) if u["user"] == "pia")
    assert pia["gpus"] == [held[0]["uuid"]]
    assert re.split(r"\s{2,}", next(line for line in ok(gpus, "users").splitlines() if line.startswith("pia ")))[3] == index
    assert re.split(r"\s{2,}", next(line for line in ok(gpus, "servers").splitlines() if line.startswith("pia ")))[6] == index
    assert "1 of 2 GPUs free" in ok(gpus, "status")


def test_deluser_stops_the_server_ends_sessions_and_frees_the_gpu(gpus):
    b = login(gpus, "pia", PASSWORD)
    assert b.get("/hub/api/user", headers=b.hub_xsrf()).status_code == 200
    out = json.loads(ok(gpus, "deluser --json pia"))
    assert out == {"user": "pia", "stopped": True, "removed_from": ["jupyterhub-users"], "hub_record_deleted": True,
                   "gpu_quota_removed": True, "issued_tokens_revoked": 0, "account_deleted": False,
                   "home_deleted": False}
    assert "pia" not in ok(gpus, "config show")
    assert all(g["holder"] is None for g in json.loads(ok(gpus, "gpus --json"))["gpus"])
    assert b.get("/hub/api/user", headers=b.hub_xsrf()).status_code == 403  # the session is gone
    assert gpus.sh("test -d /home/pia && id pia", check=False).returncode == 0  # not an applctl account: kept
    assert ok(gpus, "deluser pia") == "pia had no access; nothing changed\n"


def test_deluser_of_an_account_adduser_created_deletes_it(gpus):
    assert ok(gpus, "deluser kim") == "kim no longer has access\ndeleted the account kim and its home /home/kim\n"
    assert gpus.sh("id kim", check=False).returncode != 0 and gpus.sh("test -e /home/kim", check=False).returncode != 0
    assert "there is no user kim on this machine" in refused(gpus, "deluser kim")
    ok(gpus, "adduser --create lars")
    assert ok(gpus, "deluser --keep-home lars").endswith("deleted the account lars; kept its home /home/lars\n")
    assert gpus.sh("test -d /home/lars", check=False).returncode == 0
