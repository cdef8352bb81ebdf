"""ExecStart of jupyterhub.service: check appliance.toml, then become JupyterHub (app.py).

Checking here, in the main process, makes a bad file exit with EX_CONFIG, which the
unit does not restart on (RestartPreventExitStatus); the one-line message is then
the last thing `systemctl status jupyterhub` shows.
"""

from __future__ import annotations

import os
import sys

from .. import config

HUB_CONFIG = "/etc/jupyterhub/jupyterhub_config.py"


def main() -> None:
    config.exit_if_invalid("jupyterhub")
    # JupyterHub with the appliance's start-up step (app.py), in a fresh process.
    os.execv(sys.executable, [sys.executable, "-m", "appliance.hub.app", f"--config={HUB_CONFIG}"])


if __name__ == "__main__":
    main()
