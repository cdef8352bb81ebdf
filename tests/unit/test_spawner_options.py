"""The spawner sends only what the daemon accepts, and refuses what it cannot honour."""

from types import SimpleNamespace

import pytest
from traitlets.config import Config

from appliance import protocol
from appliance.hub.spawner import FIXED_OPTIONS, ApplianceSpawner


def spawner(**settings) -> ApplianceSpawner:
    c = Config()
    for k, v in settings.items():
        setattr(c.SystemdSpawner, k, v)
    user = SimpleNamespace(name="alice", id=7, url="/user/alice/", server=None, admin=False)
    return ApplianceSpawner(user=user, config=c, hub=SimpleNamespace(api_url="http://127.0.0.1:8081/hub/api"))


def test_the_defaults_are_what_the_appliance_does():
    s = spawner()
    assert s.unsupported_options() == []
    assert s.unit_name == "jupyter-alice.service"


@pytest.mark.parametrize("name, value", [
    ("isolate_tmp", False), ("disable_user_sudo", False), ("dynamic_users", True), ("slice", "system.slice"),
    ("user_workingdir", "/srv"), ("unit_name_template", "nb-{USERNAME}"), ("extra_paths", ["/opt/bin"]),
])
def test_a_systemdspawner_option_the_appliance_cannot_honour_is_named(name, value):
    assert name in FIXED_OPTIONS
    [said] = spawner(**{name: value}).unsupported_options()
    assert said.startswith(f"SystemdSpawner.{name} = {value!r} (")


def test_spawner_args_become_bounded_options():
    assert protocol.parse_args(["--debug", "--ServerApp.terminals_enabled=False",
                                "--MappingKernelManager.cull_idle_timeout=600"]) == {
        "debug": True, "ServerApp.terminals_enabled": False, "MappingKernelManager.cull_idle_timeout": 600}
    assert protocol.render_args({"debug": True, "ServerApp.terminals_enabled": False}) == [
        "--ServerApp.terminals_enabled=False", "--debug"]


@pytest.mark.parametrize("arg", [
    "--config=/tmp/evil.py", "--ServerApp.jpserver_extensions={'x': True}", "--ServerApp.extra_static_paths=/tmp",
    "--NotebookApp.extra_template_paths=/tmp", "--ServerApp.kernel_manager_class=evil.KM", "-f", "x",
    "--ServerApp.terminals_enabled=maybe",
])
def test_arguments_that_load_code_or_configuration_are_refused(arg):
    with pytest.raises(ValueError, match="accepted|of the form|takes"):
        protocol.parse_args([arg])


def test_a_spawn_in_the_gpu_queue_shows_its_place_and_the_stop_button_ends_the_wait(monkeypatch):
    import asyncio

    from appliance.hub import spawner as spawner_module

    sent = []
    replies = iter([{"queued": True, "position": 2, "in_use": 4, "total": 4},
                    {"queued": True, "position": 1, "in_use": 4, "total": 4}])

    async def call(request, path=None, timeout=None):
        sent.append(request["op"])
        if request["op"] == "stop":
            return {"ok": True}
        return next(replies, {"queued": True, "position": 1, "in_use": 4, "total": 4})

    monkeypatch.setattr(spawner_module.client, "call", call)
    monkeypatch.setattr(spawner_module, "QUEUE_ASK_INTERVAL", 0.01)
    s = spawner()

    async def scenario():
        task = asyncio.ensure_future(s._ask_until_started({"op": "spawn"}))
        while len(sent) < 3:
            await asyncio.sleep(0.01)
        assert await s.poll() is None  # "running" while it waits, so JupyterHub calls stop()
        await s.stop()
        with pytest.raises(Exception, match="You left the GPU queue"):
            await task

    asyncio.run(scenario())
    assert [e["message"] for e in s._events] == [
        "Waiting for a GPU: you are number 2 in the queue (4 of 4 GPUs in use)",
        "Waiting for a GPU: you are number 1 in the queue (4 of 4 GPUs in use)"]
    assert sent[-1] == "stop" and sent.count("stop") == 2 and not s._in_queue


def test_a_cancelled_wait_keeps_the_place_until_jupyterhub_stops_it(monkeypatch):
    """JupyterHub cancels start() for the stop button and at shutdown alike; only the
    stop it makes next (for the button) leaves the queue."""
    import asyncio

    from appliance.hub import spawner as spawner_module

    sent = []

    async def call(request, path=None, timeout=None):
        sent.append(request["op"])
        return {"ok": True} if request["op"] == "stop" else {"queued": True, "position": 1, "in_use": 1, "total": 1}

    monkeypatch.setattr(spawner_module.client, "call", call)
    monkeypatch.setattr(spawner_module, "QUEUE_ASK_INTERVAL", 0.01)
    s = spawner()

    async def scenario():
        task = asyncio.ensure_future(s._ask_until_started({"op": "spawn"}))
        while not sent:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert "stop" not in sent and await s.poll() is None  # shutdown: the daemon keeps the place
        await s.stop()  # the stop button: JupyterHub stops what poll says runs

    asyncio.run(scenario())
    assert sent[-1] == "stop" and not s._in_queue
