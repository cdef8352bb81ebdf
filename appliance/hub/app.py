"""JupyterHub itself, with one step added at start (see revoke.py)."""

from __future__ import annotations

import logging

from jupyterhub.app import JupyterHub
from traitlets import default

from ..groups import STATE_DIR
from ..state import APPLCTL_TOKEN, read_secret
from . import revoke
from .configurer import APPLCTL_SERVICE


class ApplianceHub(JupyterHub):
    @default("log")
    def _log_default(self):
        # Log as "JupyterHub", as administrators and their log filters know it.
        log = logging.getLogger("JupyterHub")
        log.propagate = False
        return log

    async def init_users(self):
        try:
            token = read_secret(f"{STATE_DIR}/{APPLCTL_TOKEN}")
        except OSError:
            token = None
        for line in revoke.revoke(self.db, APPLCTL_SERVICE, token):
            self.log.warning("jupyterhub-appliance: %s", line)
        await super().init_users()


main = ApplianceHub.launch_instance

if __name__ == "__main__":
    main()
