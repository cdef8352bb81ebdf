"""appliance/singleuser.py, every server's ExecStart: no cyclic GC while the server
starts, collection on again once its loop runs. Run as the package runs it, as a
script, with a stand-in jupyterhub.singleuser that starts tornado's current loop as
Jupyter Server does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import appliance

LAUNCHER = Path(appliance.__file__).parent / "singleuser.py"

STAND_IN = '''
import gc, json, sys
from tornado import ioloop

def main():
    seen = {"starting": gc.isenabled(), "argv0": sys.argv[0], "args": sys.argv[1:]}
    loop = ioloop.IOLoop.current()  # what Jupyter Server's init_ioloop does

    def serving():
        seen["serving"] = gc.isenabled()
        loop.stop()

    loop.add_callback(serving)
    loop.start()
    print(json.dumps(seen))
    return 3
'''

YARN_STAND_IN = '''
def _yarn_config(logger):
    return {"yarn config": {"registry": "asked node"}, "npm config": {}}

def get_app_version():  # what labapp calls when imported
    return _yarn_config(None)["yarn config"].get("registry", "default")
'''

ASKS_YARN = '''
import json

def main():
    import jupyterlab.commands
    print(json.dumps(jupyterlab.commands.get_app_version()))
    return 0
'''


def stand_ins(tmp_path, singleuser: str, with_jupyterlab: bool) -> dict:
    for package, module, text in (("jupyterhub", "singleuser", singleuser),
                                  ("jupyterlab", "commands", YARN_STAND_IN if with_jupyterlab else None)):
        if text is None:
            continue
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / f"{module}.py").write_text(text)
    return dict(os.environ, PYTHONPATH=str(tmp_path))


def test_gc_is_off_while_the_server_starts_and_on_once_it_serves(tmp_path):
    env = stand_ins(tmp_path, STAND_IN, with_jupyterlab=False)
    r = subprocess.run([sys.executable, str(LAUNCHER), "--debug"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 3, r.stderr  # the server's own exit status
    seen = json.loads(r.stdout)
    assert seen == {"starting": False, "argv0": "jupyterhub-singleuser", "args": ["--debug"], "serving": True}


def test_the_server_never_asks_yarn_for_its_configuration(tmp_path):
    """JupyterLab would run Node.js at import to learn an npm registry no server uses."""
    env = stand_ins(tmp_path, ASKS_YARN, with_jupyterlab=True)
    r = subprocess.run([sys.executable, str(LAUNCHER)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == "default"


def test_an_environment_without_jupyterlab_still_starts(tmp_path):
    env = stand_ins(tmp_path, "def main():\n    print('served')\n    return 0\n", with_jupyterlab=False)
    r = subprocess.run([sys.executable, str(LAUNCHER)], env=env, capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "served\n", "")
