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


def test_gc_is_off_while_the_server_starts_and_on_once_it_serves(tmp_path):
    (tmp_path / "jupyterhub").mkdir()
    (tmp_path / "jupyterhub" / "__init__.py").write_text("")
    (tmp_path / "jupyterhub" / "singleuser.py").write_text(STAND_IN)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    r = subprocess.run([sys.executable, str(LAUNCHER), "--debug"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 3, r.stderr  # the server's own exit status
    seen = json.loads(r.stdout)
    assert seen == {"starting": False, "argv0": "jupyterhub-singleuser", "args": ["--debug"], "serving": True}
