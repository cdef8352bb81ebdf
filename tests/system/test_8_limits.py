"""Limits on the booted appliance, as systemd records them (the container has no
memory or cpu controller to enforce them: tests/vm proves that on a real kernel):
per server by group and user, the cap on jupyter-users.slice, an administrator's
drop-ins, the protection of the hub, and the deprecated keys."""

from __future__ import annotations

import json

import pytest
from browser import Browser
from gpus import fake_config, install_fake_gpus

PASSWORD = "limit-pass-1"
GiB = 1024**3


@pytest.fixture(scope="module")
def limited(appliance, tmp_path_factory):
    app = appliance
    # GPUs, so that the spawn form shows and must state the user's limits (left installed,
    # as the GPU modules leave them; harmless if one of them did it first).
    install_fake_gpus(app, tmp_path_factory, fake_config())
    app.sh("systemctl daemon-reload && systemctl stop jupyterhub-appliance.service")
    app.sh("getent group mlteam >/dev/null || groupadd mlteam")
    for name in ("lim1", "lim2", "lim3"):
        app.sh(f"id {name} >/dev/null 2>&1 || useradd -m {name}; echo {name}:{PASSWORD} | chpasswd; "
               f"applctl adduser {name} >/dev/null 2>&1 || true")
    app.sh("gpasswd -a lim2 mlteam >/dev/null")
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text(
        '[limits]\nmem_limit = "2G"\ncpu_limit = 1\ntasks_max = 300\nmem_limit_groups = { mlteam = "6G" }\n'
        'cpu_limit_users = { lim3 = 1.5 }\ntotal_memory = "10G"\ntotal_cpu = 1.5\n'))
    app.sh("applctl reload")
    app.wait_hub()
    yield app
    app.sh("applctl stop --all >/dev/null", check=False)
    app.sh("rm -rf /etc/systemd/system/jupyter-.service.d /etc/systemd/system/jupyter-lim3.service.d "
           "/etc/systemd/system/jupyter-users.slice.d; systemctl daemon-reload", check=False)
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text())
    app.sh("applctl reload", check=False)


def start(app, name: str) -> Browser:
    b = Browser(app.url)
    b.login_and_start(name, PASSWORD)
    b.wait_for_server(name)
    return b


def cores(quota_per_sec: str) -> float:
    """systemctl's CPUQuotaPerSecUSec ("1.500000s", "1.500s", "500ms") in cores."""
    return float(quota_per_sec.removesuffix("ms")) / 1000 if quota_per_sec.endswith("ms") \
        else float(quota_per_sec.removesuffix("s"))


def test_each_server_gets_its_limits_and_the_slice_its_cap(limited):
    app = limited
    form = Browser(app.url)
    page = form.login("lim2", PASSWORD).text
    assert 'id="spawn_form"' in page, page[:500]  # GPUs visible (the fixture's fake NVML)
    assert "Your server: 6 GB RAM, 1 CPU" in page  # the group's memory, the default CPU
    for name in ("lim1", "lim2", "lim3"):
        start(app, name)
    props = {n: app.unit_props(f"jupyter-{n}.service", "MemoryMax", "CPUQuotaPerSecUSec", "TasksMax")
             for n in ("lim1", "lim2", "lim3")}
    assert props["lim1"] == {"MemoryMax": str(2 * GiB), "CPUQuotaPerSecUSec": "1s", "TasksMax": "300"}
    # systemd prints a fraction of a second with 3 or 6 decimals, depending on the version
    assert props["lim2"]["MemoryMax"] == str(6 * GiB)  # the group's
    assert cores(props["lim3"]["CPUQuotaPerSecUSec"]) == 1.5  # the user's own
    cap = app.unit_props("jupyter-users.slice", "MemoryMax", "CPUQuotaPerSecUSec")
    assert cap["MemoryMax"] == str(10 * GiB) and cores(cap["CPUQuotaPerSecUSec"]) == 1.5
    users = {r["user"]: r for r in json.loads(app.sh("applctl users --json").stdout)}
    assert users["lim2"]["limits"] == {"mem": 6 * GiB, "cpu": 1.0, "tasks": 300}
    servers = app.sh("applctl servers").stdout
    assert any(line.startswith("lim3 ") and "2G, 1.5 CPUs" in line for line in servers.splitlines()), servers
    # The hub, proxy and daemon stay outside the slice, protected from it.
    for unit in ("jupyterhub.service", "jupyterhub-proxy.service", "jupyterhub-appliance.service"):
        p = app.unit_props(unit, "Slice", "OOMScoreAdjust")
        assert p["Slice"] == "system.slice" and int(p["OOMScoreAdjust"]) <= -500, (unit, p)


def test_administrators_drop_ins_apply_to_every_server_or_one(limited):
    app = limited
    app.ct.write("/etc/systemd/system/jupyter-.service.d/50-site.conf", "[Service]\nTasksMax=777\n")
    app.ct.write("/etc/systemd/system/jupyter-lim3.service.d/50-lim3.conf", "[Service]\nMemoryHigh=1G\n")
    app.sh("systemctl daemon-reload && applctl stop lim1 && applctl stop lim3")
    start(app, "lim1")
    start(app, "lim3")
    assert app.unit_props("jupyter-lim1.service", "TasksMax", "MemoryHigh") == {
        "TasksMax": "777", "MemoryHigh": "infinity"}
    assert app.unit_props("jupyter-lim3.service", "TasksMax", "MemoryHigh") == {
        "TasksMax": "777", "MemoryHigh": str(GiB)}
    # systemctl edit jupyter-users.slice: the daemon leaves the total to the administrator.
    app.ct.write("/etc/systemd/system/jupyter-users.slice.d/override.conf", "[Slice]\nMemoryMax=3G\n")
    app.sh("systemctl daemon-reload && applctl reload")
    app.wait_hub()
    assert app.unit_props("jupyter-users.slice", "MemoryMax")["MemoryMax"] == str(3 * GiB)
    assert "left to the administrator's drop-ins" in app.sh(
        "journalctl -u jupyterhub-appliance -n 30 --no-pager").stdout


def test_the_old_spawner_keys_still_work_with_a_message(limited):
    app = limited
    app.ct.write("/root/old.toml", '[spawner]\nmem_limit = "3G"\n')
    out = app.sh("applctl config validate /root/old.toml")
    assert "/root/old.toml: valid" in out.stdout
    assert "spawner.mem_limit is deprecated: use limits.mem_limit" in out.stdout + out.stderr
    missing = app.sh("applctl config validate /root/absent.toml", check=False)
    assert missing.returncode == 1 and "/root/absent.toml: no such file" in missing.stderr


# One bad value for every key issues 9 and 10 added: `applctl config set` refuses it
# in one line that names the key, and the file stays as it was.
BAD_VALUES = [
    ("gpu.queue", "maybe"), ("gpu.queue_timeout", "5"), ("gpu.sample_interval", "0"),
    ("gpu.idle_threshold", "101"), ("gpu.idle_timeout", "5"), ("gpu.reclaim", '"sometimes"'),
    ("culler.enabled", '"yes"'), ("culler.timeout", "10"), ("culler.every", "0"), ("culler.max_age", "59"),
    ("culler.cull_admin_users", "2"), ("culler.concurrency", "0"),
    ("limits.mem_limit", '"lots"'), ("limits.cpu_limit", '"fast"'), ("limits.tasks_max", "8"),
    ("limits.mem_limit_groups", '{ mlteam = "x" }'), ("limits.cpu_limit_users", '{ lim3 = "fast" }'),
    ("limits.cpu_limit_groups", "{ mlteam = -5 }"), ("limits.mem_limit_users", '{ lim3 = "1M" }'), ("limits.total_memory", '"most"'), ("limits.total_cpu", "2000"),
]


def test_bad_values_of_the_new_keys_are_refused_in_one_line_naming_the_key(limited):
    app = limited
    before = app.sh("md5sum /etc/jupyterhub/appliance.toml").stdout
    for key, value in BAD_VALUES:
        r = app.sh(f"applctl config set {key} '{value}'", check=False)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1 and key in lines[0], (key, value, r.stderr)
        # Refused for its value, not as an unknown key.
        assert "known keys" not in lines[0], (key, lines[0])
        assert "Traceback" not in r.stderr
    assert app.sh("md5sum /etc/jupyterhub/appliance.toml").stdout == before
