"""What `applctl proxy setup` was asked for, checked, and the site configuration
rendered from a template (pure: no file is touched here)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

TEMPLATES = Path("/etc/jupyterhub-appliance")
KINDS = ("nginx", "apache")

_HOSTNAME = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")
# Paths written into a web server's configuration: no quoting, spaces or comment and
# block characters either syntax could misread.
_PATH = re.compile(r"/[A-Za-z0-9._@+/-]+")
_SIZE = re.compile(r"(0|[1-9][0-9]*)([kmg]?)", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")


class SiteError(ValueError):
    """A bad argument: says what was wrong and what is accepted."""


@dataclass
class Site:
    kind: str
    server_name: str
    cert: str
    key: str
    self_signed: bool = False
    http_port: int = 80
    https_port: int = 443
    max_upload: str = "0"  # nginx's notation: 0 (no limit), 500m, 2g
    upstream: str = "127.0.0.1:8000"
    htpasswd: str | None = None  # the site password's file, when it is on

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Site":
        return check(cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data}))


def check_server_name(name: str) -> str:
    name = name.strip().lower().rstrip(".")
    if not _HOSTNAME.fullmatch(name):
        raise SiteError(f"--server-name {name!r} is not a host name: give the public DNS name, "
                        "letters, digits, hyphens and dots (for example hub.example.org)")
    return name


def check_path(option: str, path: str) -> str:
    if not _PATH.fullmatch(path) or "/../" in path + "/":
        raise SiteError(f"{option} {path!r}: give an absolute path made of letters, digits and ._@+-/ "
                        "(no spaces or quotes)")
    return path


def upload_bytes(size: str) -> int:
    m = _SIZE.fullmatch(size.strip())
    if not m:
        raise SiteError(f"--max-upload {size!r}: give a size such as 0 (no limit), 500M or 2G")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]


def check(site: Site) -> Site:
    if site.kind not in KINDS:
        raise SiteError(f"unknown web server {site.kind!r}: choose nginx or apache")
    site.server_name = check_server_name(site.server_name)
    check_path("--cert", site.cert)
    check_path("--key", site.key)
    for option, port in (("--http-port", site.http_port), ("--https-port", site.https_port)):
        if not (isinstance(port, int) and 1 <= port <= 65535):
            raise SiteError(f"{option} {port!r}: give a TCP port, 1 to 65535")
    if site.http_port == site.https_port:
        raise SiteError("--http-port and --https-port must differ")
    upload_bytes(site.max_upload)
    if site.htpasswd is not None:
        check_path("the password file", site.htpasswd)
    return site


def _auth(site: Site) -> str:
    if site.htpasswd is None:
        return "" if site.kind == "nginx" else "        Require all granted"
    realm = f"JupyterHub at {site.server_name}"
    if site.kind == "nginx":
        return f'    auth_basic "{realm}";\n    auth_basic_user_file {site.htpasswd};\n'
    return (f'        AuthType Basic\n        AuthName "{realm}"\n'
            f"        AuthUserFile {site.htpasswd}\n        Require valid-user")


def render(template: str, site: Site, listen: list[int] = ()) -> str:
    """The template with its @PLACEHOLDERS@ filled in; `listen` are ports Apache
    does not listen on yet (a Listen line each)."""
    values = {
        "SERVER_NAME": site.server_name, "CERT": site.cert, "KEY": site.key,
        "HTTP_PORT": str(site.http_port), "HTTPS_PORT": str(site.https_port),
        "HTTPS_PORT_SUFFIX": "" if site.https_port == 443 else f":{site.https_port}",
        "MAX_UPLOAD": site.max_upload.lower(), "MAX_UPLOAD_BYTES": str(upload_bytes(site.max_upload)),
        "UPSTREAM": site.upstream, "AUTH": _auth(site),
        "LISTEN": "".join(f"Listen {p}\n" for p in listen),
    }
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(template)} - values.keys())
    if unknown:
        raise SiteError(f"the template has placeholders applctl does not know: {', '.join(unknown)} "
                        f"(known: {', '.join(sorted(values))})")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
