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
