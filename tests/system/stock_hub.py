"""The baseline of scripts/bench-spawn: what a person would install instead of the
appliance. JupyterHub with the stock SystemdSpawner and PAM, the hub run as root,
in its own environment made by a plain `pip install` of the same versions of
jupyterhub and jupyterlab as ours (their default dependencies, not our pins), and
Debian's configurable-http-proxy, which the appliance uses too.

The environment is made with the container's own python3 (its release's), at the
path it has there, the first time; then kept in the test cache, per release and
versions, and copied into each new container.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from booted import TOP
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


def wanted() -> list[str]:
    """What a person would pip install: our versions of the three."""
    return [pinned(p) for p in ("jupyterhub", "jupyterlab", "jupyterhub-systemdspawner")]


def cached_env(release: str) -> Path:
    return CACHE / f"stock-{release}-{re.sub(r'[^A-Za-z0-9.]+', '-', '-'.join(wanted()))}"


def install_env(ct: Container) -> None:
    """The stock environment at PREFIX in the container: from the cache, or made there
    with a plain pip install (about a minute) and then cached."""
    home = cached_env(ct.release)
    dest = ct.root / PREFIX.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if (home / ".complete").exists():
        subprocess.run(["cp", "-a", "--reflink=auto", str(home / "env"), str(dest)], check=True)
        return
    # pip trusts what the host trusts (the host may reach PyPI through a TLS proxy
    # whose CA only its own bundle has; TESTING.md).
    ct.copy_in(Path("/etc/ssl/certs/ca-certificates.crt"), "/root/host-ca.crt")
    ct.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >/dev/null && "
           f"python3 -m venv {PREFIX} && PIP_CERT=/root/host-ca.crt {PREFIX}/bin/pip install --quiet "
           f"--disable-pip-version-check {' '.join(wanted())}")
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(dest), str(home / "env")], check=True)
    (home / ".complete").touch()


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
    install_env(ct)
    ct.write("/etc/stock-jupyterhub/jupyterhub_config.py", config(port, hub_port, proxy_api_port))
    ct.run("install -d -m 700 /var/lib/stock-jupyterhub && "
           "systemd-run --quiet --unit=stock-jupyterhub -p Type=exec --working-directory=/var/lib/stock-jupyterhub "
           f"{PREFIX}/bin/jupyterhub -f /etc/stock-jupyterhub/jupyterhub_config.py")
