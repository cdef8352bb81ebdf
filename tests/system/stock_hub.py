"""The baseline of scripts/bench-spawn: what a person would install instead of the
appliance. JupyterHub with the stock SystemdSpawner and PAM, the hub run as root,
in its own environment made by a plain `pip install` of the same versions of
jupyterhub and jupyterlab as ours (their default dependencies, not our pins), and
Debian's configurable-http-proxy, which the appliance uses too.

The environment is built on the host with bookworm's python3 (the container's),
then moved to the path it has inside the container; kept in the test cache.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from conftest import TOP
from container import CACHE, Container

PREFIX = "/opt/stock-jupyterhub"  # its path inside the container


def pinned(package: str) -> str:
    """Our version of a package, from the requirements the .deb is built with."""
    for req in ("user.txt", "hub.txt"):
        for line in (TOP / "requirements" / req).read_text().splitlines():
            # `name==version \` followed by its --hash lines (scripts/pin-hashes)
            if line.split("==")[0].strip().lower() == package:
                return line.split()[0]
    raise LookupError(f"{package} is not pinned in requirements/")


def stock_env() -> Path:
    """The stock environment on the host (made on first use, ~1 min), to be copied to PREFIX."""
    wanted = [pinned("jupyterhub"), pinned("jupyterlab"), pinned("jupyterhub-systemdspawner")]
    key = re.sub(r"[^A-Za-z0-9.]+", "-", "-".join(wanted))
    home = CACHE / f"stock-{key}"
    if (home / ".complete").exists():
        return home / "env"
    shutil.rmtree(home, ignore_errors=True)
    env = home / "env"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(env)], check=True)
    subprocess.run([str(env / "bin/pip"), "install", "--quiet", "--disable-pip-version-check", *wanted], check=True)
    # Where a person's venv would have been made: its scripts name PREFIX. The .pyc
    # files pip wrote stay valid (they are checked against the sources' mtimes).
    for path in [env / "pyvenv.cfg", *(env / "bin").iterdir()]:
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if str(env).encode() in data:
                path.write_bytes(data.replace(str(env).encode(), PREFIX.encode()))
    (home / ".complete").touch()
    return env


def config(port: int, hub_port: int, proxy_api_port: int) -> str:
    return f"""# The stock hub of the benchmark: defaults, as a person would write them.
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = ["/usr/bin/configurable-http-proxy"]
c.JupyterHub.spawner_class = "systemdspawner.SystemdSpawner"
c.Spawner.cmd = ["{PREFIX}/bin/jupyterhub-singleuser"]
c.Spawner.start_timeout = 300
c.Authenticator.allow_all = True
c.JupyterHub.db_url = "sqlite:////var/lib/stock-jupyterhub/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/var/lib/stock-jupyterhub/jupyterhub_cookie_secret"
"""


def start(ct: Container, port: int, hub_port: int, proxy_api_port: int) -> None:
    """Install the stock hub into the container and start it as root."""
    src = stock_env()
    dest = ct.root / PREFIX.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dest)], check=True)
    ct.write("/etc/stock-jupyterhub/jupyterhub_config.py", config(port, hub_port, proxy_api_port))
    ct.run("install -d -m 700 /var/lib/stock-jupyterhub && "
           "systemd-run --quiet --unit=stock-jupyterhub -p Type=exec --working-directory=/var/lib/stock-jupyterhub "
           f"{PREFIX}/bin/jupyterhub -f /etc/stock-jupyterhub/jupyterhub_config.py")
