"""Where each distribution's nginx and Apache keep a site, how it is enabled,
checked and reloaded, and which group the workers run as.

Debian: sites-available/ plus a link in sites-enabled/ for both; Apache's modules
with a2enmod. Arch: nginx.conf and httpd.conf include nothing by default, so the
administrator adds one include line (README.md, "Reverse proxy"); applctl checks it
is there and refuses, saying which line, before it changes anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

NAME = "jupyterhub-appliance.conf"
APACHE_MODULES = ("proxy", "proxy_http", "proxy_wstunnel", "headers", "ssl", "rewrite")


@dataclass(frozen=True)
class Layout:
    kind: str                   # nginx | apache
    package: str                # what to install when the server is missing
    binary: str                 # proves the server is installed
    site: Path                  # the rendered configuration
    enabled: Path | None        # a link that enables it (Debian's sites-enabled)
    service: str
    check: tuple[str, ...]      # the server's own configuration test
    group: str                  # its workers' group: may read the password file
    modules_dir: Path | None = None   # Debian's Apache: mods-enabled, changed by a2enmod
    includer: Path | None = None      # Arch: the file that must include `site`
    include_line: str = ""
    listen_files: tuple[Path, ...] = field(default=())  # Apache's Listen directives

    @property
    def touched(self) -> list[Path]:
        """Every path a setup may create or change, for the undo."""
        return [p for p in (self.site, self.enabled) if p is not None]


def distribution(root: Path = Path("/")) -> str:
    if (root / "etc/debian_version").exists():
        return "debian"
    if (root / "etc/arch-release").exists():
        return "arch"
    return "unknown"


def layout(kind: str, distro: str | None = None) -> Layout:
    distro = distro or distribution()
    if (kind, distro) == ("nginx", "debian"):
        return Layout("nginx", "nginx", "/usr/sbin/nginx", Path("/etc/nginx/sites-available") / NAME,
                      Path("/etc/nginx/sites-enabled") / NAME, "nginx", ("nginx", "-t", "-q"), "www-data")
    if (kind, distro) == ("apache", "debian"):
        return Layout("apache", "apache2", "/usr/sbin/apache2", Path("/etc/apache2/sites-available") / NAME,
                      Path("/etc/apache2/sites-enabled") / NAME, "apache2", ("apache2ctl", "configtest"),
                      "www-data", modules_dir=Path("/etc/apache2/mods-enabled"),
                      listen_files=(Path("/etc/apache2/ports.conf"),))
    if (kind, distro) == ("nginx", "arch"):
        return Layout("nginx", "nginx", "/usr/bin/nginx", Path("/etc/nginx/sites-enabled") / NAME, None, "nginx",
                      ("nginx", "-t", "-q"), "http", includer=Path("/etc/nginx/nginx.conf"),
                      include_line="include sites-enabled/*.conf;  (inside the http { } block)")
    if (kind, distro) == ("apache", "arch"):
        return Layout("apache", "apache", "/usr/bin/httpd", Path("/etc/httpd/conf/extra") / NAME, None, "httpd",
                      ("apachectl", "configtest"), "http", includer=Path("/etc/httpd/conf/httpd.conf"),
                      include_line=f"Include conf/extra/{NAME}  (and the LoadModule lines of "
                                   + ", ".join(f"mod_{m}" for m in APACHE_MODULES) + ")",
                      listen_files=(Path("/etc/httpd/conf/httpd.conf"),))
    raise ValueError(f"applctl proxy knows Debian and Arch; this machine is {distro}")


def included(lay: Layout) -> bool:
    """Arch: does the main configuration include the site (an uncommented line)?"""
    if lay.includer is None:
        return True
    try:
        text = lay.includer.read_text()
    except OSError:
        return False
    want = "sites-enabled/" if lay.kind == "nginx" else f"conf/extra/{NAME}"
    return any(want in line.split("#", 1)[0] and line.split()[0].lower() == "include"
               for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


_LISTEN = re.compile(r"^\s*Listen\s+(?:\S+:)?(\d+)\b", re.IGNORECASE | re.MULTILINE)


def apache_listens(lay: Layout) -> set[int]:
    """Ports Apache's own files already listen on: a second Listen is an error."""
    ports: set[int] = set()
    for path in lay.listen_files:
        try:
            ports |= {int(p) for p in _LISTEN.findall(path.read_text())}
        except OSError:
            pass
    return ports
