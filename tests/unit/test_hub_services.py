"""The hub services appliance.toml turns on: the idle culler and the gpu-reclaimer,
each with a role that only lets it stop servers, and the dashboard; all three run
in the hub's process (services.py), each with its own token."""

import pytest
from traitlets.config import Config

from appliance import config
from appliance.hub import configurer
from appliance.state import APPLCTL_TOKEN, PROXY_TOKEN


def apply(tmp_path, text: str) -> Config:
    (tmp_path / PROXY_TOKEN).write_text("p\n")
    (tmp_path / APPLCTL_TOKEN).write_text("a\n")
    c = Config()
    configurer.apply(c, config.loads(text), str(tmp_path))
    return c


@pytest.mark.parametrize("text, names", [
    ("", {"idle-culler", "gpu-reclaimer", "gpus", "applctl"}),
    ("[gpu]\nreclaim = 'never'\n", {"idle-culler", "gpus", "applctl"}),
    ("[culler]\nenabled = false\n[gpu]\nreclaim = 'always'\n[dashboard]\nenabled = false\n",
     {"gpu-reclaimer", "applctl"}),
])
def test_services_follow_the_configuration(tmp_path, text, names):
    c = apply(tmp_path, text)
    assert {s["name"] for s in c.JupyterHub.services} == names
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    if "gpu-reclaimer" in names:
        assert roles["gpu-reclaimer"]["scopes"] == ["delete:servers"]
        assert c.ApplianceHub.reclaim_interval == 10
    # No process of their own: JupyterHub starts none (no "command").
    assert not [s for s in c.JupyterHub.services if "command" in s]


def test_each_own_service_has_its_own_token_new_at_every_start(tmp_path):
    def tokens():
        return {s["name"]: s["api_token"] for s in apply(tmp_path, "").JupyterHub.services if s["name"] != "applctl"}
    first, second = tokens(), tokens()
    assert len(set(first.values())) == 3 and all(len(t) >= 40 for t in first.values())
    assert not set(first.values()) & set(second.values())


def test_the_dashboard_is_an_oauth_service_on_its_loopback_port_hidden_from_the_services_menu(tmp_path):
    c = apply(tmp_path, "[hub]\ndashboard_port = 8093\n[gpu]\nsample_interval = 5\n")
    gpus = next(s for s in c.JupyterHub.services if s["name"] == "gpus")
    assert gpus["url"] == "http://127.0.0.1:8093" and c.ApplianceHub.dashboard_interval == 5
    assert gpus["oauth_no_confirm"] is True and gpus["display"] is False
    assert not [r for r in c.JupyterHub.load_roles if "gpus" in r.get("services", [])]  # no hub API scope
    assert c.JupyterHub.template_vars["appliance_dashboard"] is True
    assert apply(tmp_path, "[dashboard]\nenabled = false\n").JupyterHub.template_vars["appliance_dashboard"] is False


def test_metrics_access_reaches_the_hub(tmp_path):
    c = apply(tmp_path, "[hub]\nmetrics_port = 9500\n[metrics]\naccess = 'token'\n")
    assert (c.ApplianceHub.metrics_access, c.ApplianceHub.metrics_port) == ("token", 9500)
    assert apply(tmp_path, "").ApplianceHub.metrics_access == "loopback"


def test_a_spawn_may_wait_in_the_queue_before_it_starts(tmp_path):
    assert apply(tmp_path, "[gpu]\nqueue_timeout = 600\n").Spawner.start_timeout == 120 + 600
    assert apply(tmp_path, "[gpu]\nqueue = false\n").Spawner.start_timeout == 120


def test_culler_settings_reach_it_and_activity_is_reported_often_enough(tmp_path):
    c = apply(tmp_path, "[culler]\ntimeout = 40\nevery = 10\nmax_age = 600\ncull_admin_users = false\n"
                        "concurrency = 3\n")
    assert c.ApplianceHub.culler == {"timeout": 40, "every": 10, "max_age": 600, "concurrency": 3,
                                     "cull_admin_users": False}
    assert c.JupyterHub.last_activity_interval == 10 and c.ApplianceSpawner.activity_interval == 10
    assert apply(tmp_path, "").JupyterHub.last_activity_interval == 300  # JupyterHub's own default at most
    assert apply(tmp_path, "").ApplianceHub.culler["max_age"] == 0  # cull_idle's "never"
    assert "culler" not in apply(tmp_path, "[culler]\nenabled = false\n").ApplianceHub
