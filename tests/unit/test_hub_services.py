"""The hub-managed services appliance.toml turns on: the idle culler and the
gpu-reclaimer, each with a role that only lets it stop servers."""

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
    ("", {"idle-culler", "gpu-reclaimer", "applctl"}),
    ("[gpu]\nreclaim = 'never'\n", {"idle-culler", "applctl"}),
    ("[culler]\nenabled = false\n[gpu]\nreclaim = 'always'\n", {"gpu-reclaimer", "applctl"}),
])
def test_services_follow_the_configuration(tmp_path, text, names):
    c = apply(tmp_path, text)
    assert {s["name"] for s in c.JupyterHub.services} == names
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    if "gpu-reclaimer" in names:
        assert roles["gpu-reclaimer"]["scopes"] == ["delete:servers"]
        command = next(s["command"] for s in c.JupyterHub.services if s["name"] == "gpu-reclaimer")
        assert command[-1] == "--interval=10"


def test_a_spawn_may_wait_in_the_queue_before_it_starts(tmp_path):
    assert apply(tmp_path, "[gpu]\nqueue_timeout = 600\n").Spawner.start_timeout == 120 + 600
    assert apply(tmp_path, "[gpu]\nqueue = false\n").Spawner.start_timeout == 120


def test_culler_settings_reach_its_command_and_activity_is_reported_often_enough(tmp_path):
    c = apply(tmp_path, "[culler]\ntimeout = 40\nevery = 10\nmax_age = 600\ncull_admin_users = false\n"
                        "concurrency = 3\n")
    command = next(s["command"] for s in c.JupyterHub.services if s["name"] == "idle-culler")
    assert command[3:] == ["--timeout=40", "--cull-every=10", "--concurrency=3", "--cull-admin-users=False",
                           "--max-age=600"]
    assert c.JupyterHub.last_activity_interval == 10 and c.ApplianceSpawner.activity_interval == 10
    assert apply(tmp_path, "").JupyterHub.last_activity_interval == 300  # JupyterHub's own default at most
    assert "--max-age" not in " ".join(next(s["command"] for s in apply(tmp_path, "").JupyterHub.services
                                            if s["name"] == "idle-culler"))
