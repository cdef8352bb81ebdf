"""ExecStart of jupyterhub.service: check appliance.toml, then become JupyterHub.

Checking here, in the main process, makes a bad file exit with EX_CONFIG, which the
unit does not restart on (RestartPreventExitStatus); the one-line message is then
the last thing `systemctl status jupyterhub` shows.
"""

from __future__ import annotations

import os
import sys

from .. import config

JUPYTERHUB = os.path.join(os.path.dirname(sys.executable), "jupyterhub")
HUB_CONFIG = "/etc/jupyterhub/jupyterhub_config.py"


def main() -> None:
    config.exit_if_invalid("jupyterhub")
    os.execv(JUPYTERHUB, [JUPYTERHUB, f"--config={HUB_CONFIG}"])


if __name__ == "__main__":
    main()
