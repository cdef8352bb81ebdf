"""The names the package creates (sysusers.d) and every part agrees on."""

import sys

HUB_USER = "jupyterhub"
USERS_GROUP = "jupyterhub-users"    # may log in and get a server
ADMINS_GROUP = "jupyterhub-admins"  # hub admins; may run `sudo applctl`
UNIT_SLICE = "jupyter-users.slice"
PAM_SERVICE = "jupyterhub-appliance"

STATE_DIR = "/var/lib/jupyterhub"  # the hub's (uid jupyterhub)
# Root's, 0700: secrets systemd hands to units (LoadCredential= follows links, so
# never from a directory the hub can write).
SECRETS_DIR = "/var/lib/jupyterhub-appliance/secrets"
RUNTIME_DIR = "/run/jupyterhub-appliance"
DAEMON_SOCKET = RUNTIME_DIR + "/daemon.sock"
LIB_DIR = "/usr/lib/jupyterhub-appliance"
USER_ENV = LIB_DIR + "/user"  # the default user environment (JupyterLab, ipykernel)
# The Python minor version both environments are built for (the package's Depends
# pins it). A server's unit names its interpreter by it (daemon/units.py), so after a
# Debian upgrade the hub tells a server still on the old Python (hub/spawner.py).
PYTHON = "%d.%d" % sys.version_info[:2]
SYSTEM_KERNELS = "/usr/local/share/jupyter/kernels"  # applctl kernels add writes here
