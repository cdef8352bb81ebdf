# jupyterhub-appliance: the hub's configuration loader.
#
# Do not edit the settings here: change /etc/jupyterhub/appliance.toml (with
# `applctl config set` or by hand). For anything the appliance does not offer, drop a
# Python file into /etc/jupyterhub/jupyterhub_config.d/; those are loaded last, in
# name order, and may override everything.
import glob
import sys

from appliance import config
from appliance.hub import configurer

try:
    configurer.apply(c, config.load())  # noqa: F821 (c is given by JupyterHub)
except config.ConfigError as e:
    sys.exit(f"jupyterhub: {e}")

for _path in sorted(glob.glob("/etc/jupyterhub/jupyterhub_config.d/*.py")):
    load_subconfig(_path)  # noqa: F821
