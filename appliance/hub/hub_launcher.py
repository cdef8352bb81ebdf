"""ExecStart of jupyterhub.service: check appliance.toml, then become JupyterHub (app.py).

Checking here, in the main process, makes a bad file exit with EX_CONFIG, which the
unit does not restart on (RestartPreventExitStatus); the one-line message is then
the last thing `systemctl status jupyterhub` shows.

JupyterHub then runs in this same process: a second interpreter (an exec) cost
its start-up and this module's imports again, while the hub's API was
unanswered on every restart.
"""

from __future__ import annotations

import gc
import sys

HUB_CONFIG = "/etc/jupyterhub/jupyterhub_config.py"


def main() -> None:
    # No cyclic garbage collection until JupyterHub has started (app.py turns it
    # back on): collections during the imports of JupyterHub and SQLAlchemy, which
    # make long-lived objects, cost a fifth of the imports' CPU time (measured).
    gc.disable()
    from .. import config

    cfg = config.exit_if_invalid("jupyterhub")
    from .. import held_ports

    try:
        held_ports.check(held_ports.HUB_SOCKET, held_ports.wanted(cfg)[held_ports.HUB_SOCKET])
    except held_ports.HeldPortError as e:
        print(f"jupyterhub: {e}", file=sys.stderr, flush=True)
        raise SystemExit(config.EX_CONFIG) from None
    from . import app

    sys.argv = [sys.argv[0], f"--config={HUB_CONFIG}"]
    app.main()


if __name__ == "__main__":
    main()
