"""The administrators' GPU dashboard (/services/gpus/), the Prometheus metrics and
the home page's own-GPU line, on the booted appliance with the fake NVML. (The
dashboard in a real browser: test_8_browser.py.)
"""

from __future__ import annotations

import time

import pytest
import requests
from browser import Browser
from gpus import GPUS, MEM_USED, UUID, api_status, install_fake_gpus
from prometheus_client.parser import text_string_to_metric_families

PASSWORD = "dash-pass-1"
ADMIN, USER = "dashboss", "dashuser"
TEMP = {0: 41, 1: 52, 2: 63, 3: 74}
POWER_MW = {0: 61000, 1: 120500, 2: 250000, 3: 300000}


def nvml(init_error: int | None = None) -> str:
    lines = ["driver 550.54.14"] + ([f"init_error={init_error}"] if init_error else [])
    for index, minor in GPUS:
        lines.append(f"gpu index={index} minor={minor} uuid={UUID.format(index)} name=NVIDIA_A100-SXM4-80GB "
                     f"mem_total={80 * 2**30} mem_used={MEM_USED[index] * 2**30} util_gpu={10 * index + 5} "
                     f"temp={TEMP[index]} power={POWER_MW[index]} pci=00000000:0{index + 1}:00.0")
    return "\n".join(lines) + "\n"


def configure(app, extra: str = "") -> None:
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text(
        "[gpu]\nquota = 1\nsample_interval = 2\n" + extra))
    app.sh("applctl reload")
    app.wait_hub()


@pytest.fixture(scope="module")
def dash(appliance, tmp_path_factory):
    app = appliance
    # The dashboard lists every running server: only this module's, whatever ran before it.
    app.sh("applctl stop --all >/dev/null")
    install_fake_gpus(app, tmp_path_factory, nvml())
    app.sh("".join(f"id {n} >/dev/null 2>&1 || useradd -m {n}; echo {n}:{PASSWORD} | chpasswd; "
                   f"applctl adduser {n} >/dev/null 2>&1 || true\n" for n in (ADMIN, USER)))
    app.sh(f"applctl admin add {ADMIN} >/dev/null")
    app.sh("systemctl daemon-reload && systemctl restart jupyterhub-appliance.service")
    configure(app)
    user = Browser(app.url)
    user.login(USER, PASSWORD)
    r = user.spawn_with_form(USER, {"gpus": "1"})
    assert r.status_code in (302, 303), (r.status_code, r.text[:300])
    user.wait_for_server(USER)
    admin = Browser(app.url)
    admin.login(ADMIN, PASSWORD)
    yield app, admin, user
    app.sh(f"applctl stop {USER} >/dev/null 2>&1 || true")
    app.ct.write("/etc/fake-nvml.conf", nvml())


def held_uuid(app) -> str:
    import json
    report = json.loads(app.daemon_request('{"op": "gpus"}').stdout)
    return next(g["uuid"] for g in report["gpus"] if g["holder"] == USER)


def test_the_dashboard_shows_admins_each_gpu_its_holder_and_the_servers(dash):
    app, admin, _user = dash
    page = admin.get("/services/gpus/")
    assert page.status_code == 200 and "<h1>GPUs</h1>" in page.text, (page.status_code, page.url, page.text[:300])
    status = api_status(admin).json()
    assert status["available"] is True and len(status["gpus"]) == len(GPUS)
    mine = next(g for g in status["gpus"] if g["holder"] == USER)
    assert mine["uuid"] == held_uuid(app)
    index = int(mine["uuid"][-1])
    assert (mine["utilization"], mine["temperature"], mine["power_watts"]) == \
        (10 * index + 5, TEMP[index], POWER_MW[index] / 1000)
    assert mine["memory_used"] == MEM_USED[index] * 2**30 and mine["memory_total"] == 80 * 2**30
    assert time.time() - 600 < mine["held_since"] <= time.time()
    assert [s["user"] for s in status["servers"]] == [USER] and status["servers"][0]["gpus"] == [mine["uuid"]]
    # The history fills as the service samples (every [gpu] sample_interval = 2 s).
    deadline = time.monotonic() + 30
    while len(api_status(admin, f"?gpu={mine['uuid']}").json()["gpus"][0]["history"]) < 2:
        assert time.monotonic() < deadline, "no utilization history after 30 s"
        time.sleep(2)
    # Admins find it from the hub's navigation bar; others do not see the link.
    assert 'id="appliance-gpus-link"' in admin.get("/hub/home").text


def test_the_dashboard_refuses_non_admins_and_sends_anonymous_visitors_to_log_in(dash):
    app, _admin, user = dash
    r = user.get("/services/gpus/")
    assert r.status_code == 403, (r.status_code, r.url)
    assert api_status(user).status_code == 403
    assert 'id="appliance-gpus-link"' not in user.get("/hub/home").text
    anonymous = requests.get(app.url + "/services/gpus/", timeout=30)
    assert anonymous.url.startswith(app.url + "/hub/login"), anonymous.url
    assert 'name="password"' in anonymous.text


@pytest.mark.parametrize("query, says", [
    ("history=abc", "history='abc' is not accepted: a whole number of minutes from 0 to 60"),
    ("history=99", "from 0 to 60"),
    ("gpu=GPU-nope", "no GPU on this machine has that UUID"),
    ("gpu=%2e%2e%2fetc", "is not accepted: a GPU's UUID"),
    ("colour=red", "unknown parameter 'colour'; accepted: history"),
])
def test_bad_query_parameters_get_a_clear_400(dash, query, says):
    _app, admin, _user = dash
    r = api_status(admin, f"?{query}")
    assert r.status_code == 400 and says in r.json()["message"], (r.status_code, r.text[:300])


def test_users_see_their_own_gpus_utilization_on_the_home_page(dash):
    app, _admin, user = dash
    index = int(held_uuid(app)[-1])
    deadline = time.monotonic() + 30
    while f"{10 * index + 5}% busy" not in (home := user.get("/hub/home").text):
        assert time.monotonic() < deadline, home[-1500:]
        time.sleep(1)
    assert 'id="appliance-my-gpus"' in home and UUID.format(index) in home


def scrape(url: str, **kw) -> dict:
    r = requests.get(url, timeout=30, **kw)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def sample(samples: dict, name: str, **labels) -> float | None:
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= ls]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def test_metrics_match_what_nvml_reports_and_answer_only_as_configured(dash):
    app, _admin, _user = dash
    holder_uuid = held_uuid(app)
    url = f"http://127.0.0.1:{app.metrics_port}/metrics"
    deadline = time.monotonic() + 30
    while sample(samples := scrape(url), "appliance_gpu_report_up") != 1:
        assert time.monotonic() < deadline, "the hub has no GPU report after 30 s"
        time.sleep(1)
    for index, minor in GPUS:
        uuid = UUID.format(index)
        labels = {"UUID": uuid, "gpu": str(index), "device": f"nvidia{minor}",
                  "modelName": "NVIDIA A100-SXM4-80GB", "user": USER if uuid == holder_uuid else ""}
        assert sample(samples, "DCGM_FI_DEV_GPU_UTIL", **labels) == 10 * index + 5, (labels, samples)
        assert sample(samples, "DCGM_FI_DEV_FB_USED", **labels) == MEM_USED[index] * 1024
        assert sample(samples, "DCGM_FI_DEV_FB_FREE", **labels) == (80 - MEM_USED[index]) * 1024
        assert sample(samples, "DCGM_FI_DEV_GPU_TEMP", **labels) == TEMP[index]
        assert sample(samples, "DCGM_FI_DEV_POWER_USAGE", **labels) == POWER_MW[index] / 1000
        assert sample(samples, "appliance_gpu_held", **labels) == (1 if uuid == holder_uuid else 0)
    assert sample(samples, "appliance_gpu_queue_length") == 0
    assert sample(samples, "appliance_spawns_total") >= 1
    assert sample(samples, "appliance_server_stops_total", reason="gpu-idle") == 0
    # JupyterHub's own metrics ride along.
    assert any(n.startswith("jupyterhub_") for n, _ in samples)
    # Loopback only: the hub's public /hub/metrics is not there.
    assert requests.get(app.url + "/hub/metrics", timeout=30).status_code == 404

    # access = "token": only through the hub, only with a read:metrics token.
    configure(app, '[metrics]\naccess = "token"\n')
    try:
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=10)
        assert requests.get(app.url + "/hub/metrics", timeout=30).status_code == 403
        token = app.sh(f"applctl token {ADMIN} --scopes read:metrics --expires-in 1h").stdout.strip().split()[-1]
        # The hub reads the daemon's report every sample_interval; the daemon restarted with it.
        deadline = time.monotonic() + 30
        while True:
            samples = scrape(app.url + "/hub/metrics", headers={"Authorization": f"Bearer {token}"})  # as Prometheus
            if sample(samples, "appliance_gpu_report_up") == 1 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert sample(samples, "DCGM_FI_DEV_GPU_TEMP", UUID=holder_uuid) == TEMP[int(holder_uuid[-1])]
    finally:
        configure(app)


def test_without_gpus_the_dashboard_says_so_and_lists_cpu_only_servers(dash):
    app, admin, _user = dash
    app.ct.write("/etc/fake-nvml.conf", nvml(init_error=9))  # NVML_ERROR_DRIVER_NOT_LOADED
    try:
        status = api_status(admin).json()
        assert status["available"] is False and status["gpus"] == []
        assert "NVML" in status["reason"]
        assert [s["user"] for s in status["servers"]] == [USER]
        assert "memory" in status["servers"][0]  # None here: the container has no memory accounting
    finally:
        app.ct.write("/etc/fake-nvml.conf", nvml())
