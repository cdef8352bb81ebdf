"""The appliance configuration: its schema, reading and validating appliance.toml.

Every consumer (hub, daemon, applctl) goes through `load()`, so an unknown key, a
wrong type or an out-of-range value is reported the same way everywhere: one line
naming the file, the key, the bad value and what is accepted.
"""

from __future__ import annotations

import grp
import os
import posixpath
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import content, ephemeral, protocol, root_only, users
from .groups import ADMINS_GROUP, HUB_USER, USERS_GROUP

DEFAULT_PATH = Path("/etc/jupyterhub/appliance.toml")

_SIZE_RE = re.compile(r"^([0-9]+)([KMGT]?)$")
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class ConfigError(ValueError):
    """A configuration problem, worded for an administrator."""

    def __init__(self, path: Path | str, key: str, value: Any, accepted: str):
        self.path, self.key, self.value, self.accepted = str(path), key, value, accepted
        super().__init__(f"{path}: {key} = {value!r} is not accepted: {accepted}")


def parse_size(text: str) -> int:
    """'4G' -> bytes. Raises ValueError on anything else."""
    m = _SIZE_RE.match(text.strip().upper())
    if not m:
        raise ValueError(text)
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)]


@dataclass(frozen=True)
class Field:
    default: Any
    doc: str
    check: Callable[[Any], Any]  # returns the normalised value or raises ValueError(accepted)
    # Only root may change it: under sudo applctl (a jupyterhub-admin) a change is refused
    # (config_edit.check_change). True: because it bounds what a jupyterhub-admin may do;
    # a text: the reason, as the refusal gives it ("<key> <reason>, so only root ...").
    root_only: bool | str = False

    @property
    def root_only_reason(self) -> str:
        return self.root_only if isinstance(self.root_only, str) else "bounds what a jupyterhub-admin may do"


def int_in(v: Any, lo: int, hi: int) -> int:
    """The one range check of whole numbers (configuration and daemon requests)."""
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"an integer from {lo} to {hi}")
    return v


def number_in(v: Any, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise ValueError(f"a number from {lo:g} to {hi:g}")
    return float(v)


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    return lambda v: int_in(v, lo, hi)


def _zero_or_int(lo: int, hi: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if v == 0 and not isinstance(v, bool):
            return 0
        try:
            return int_in(v, lo, hi)
        except ValueError:
            raise ValueError(f"0 (off) or an integer from {lo} to {hi}") from None
    return check


def _number(lo: float, hi: float) -> Callable[[Any], float]:
    return lambda v: number_in(v, lo, hi)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v




# NVIDIA's MIG profile names: 1g.10gb, 3g.40gb, 1g.10gb+me, 1c.7g.80gb (a compute instance)
_MIG_PROFILE = re.compile(r"(?:[1-7]c\.)?[1-8]g\.[0-9]{1,4}gb(?:\+(?:me|gfx|me\.all))?")


def _mig_profile(v: Any) -> str:
    if not isinstance(v, str) or not (v == "" or _MIG_PROFILE.fullmatch(v)):
        raise ValueError('a MIG profile as nvidia-smi names it, such as "1g.10gb" or "3g.40gb", or "" for any GPU')
    return v


_SHARED_GPU = re.compile(r"[0-9]{1,2}|GPU-[0-9A-Fa-f-]{8,80}")
MAX_SEATS = 64


def _shared(v: Any) -> dict[str, int]:
    accepted = (f'a table of GPUs and how many servers share each, such as {{ "0" = 4, "GPU-8f3c…" = 2 }}: '
                f'a GPU\'s NVML index or UUID = 2 to {MAX_SEATS}')
    if not isinstance(v, dict):
        raise ValueError(accepted)
    for k, n in v.items():
        if not _SHARED_GPU.fullmatch(k) or isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= MAX_SEATS:
            raise ValueError(f"{k!r} = {n!r} is not accepted: {accepted}")
    return dict(v)


def _share_memory(v: Any) -> dict[str, int]:
    accepted = ('a table of shared GPUs and the GPU memory of each seat, such as { "0" = "16G" }: '
                'a GPU\'s NVML index or UUID, as in [gpu] shared = a size')
    if not isinstance(v, dict):
        raise ValueError(accepted)
    out = {}
    for k, size in v.items():
        try:
            out[k] = parse_size(size) if _SHARED_GPU.fullmatch(k) and isinstance(size, str) else None
        except ValueError:
            out[k] = None
        if not out[k] or out[k] < 64 * 2**20:
            raise ValueError(f"{k!r} = {size!r} is not accepted: {accepted} of at least 64M")
    return out


def _gpu_share(v: Any) -> int:
    """A profile's gpu_share "1/N": a seat on a GPU [gpu] shared N ways; "": none. As N."""
    if v == "":
        return 0
    if isinstance(v, str) and (m := re.fullmatch(r"1/([0-9]{1,2})", v)) and 2 <= int(m.group(1)) <= MAX_SEATS:
        return int(m.group(1))
    raise ValueError(f'"1/N", a seat on a GPU that [gpu] shared gives N seats (N from 2 to {MAX_SEATS}), '
                     'or "" for a GPU of its own')


def _size_or_empty(v: Any) -> int | None:
    accepted = 'a size such as "512M", "4G" or "1T" (at least 64M), or "" for no limit'
    if not isinstance(v, str):
        raise ValueError(accepted)
    if v.strip() == "":
        return None
    try:
        n = parse_size(v)
    except ValueError:
        raise ValueError(accepted) from None
    if n < 64 * 1024**2:
        raise ValueError(accepted)
    return n




# What the user environment serves: JupyterLab (/lab) and Notebook 7's classic view
# (/tree), each optionally with a path below it. Anything else is a 404 on which the
# server never starts its login, and the user is stuck.
_DEFAULT_URL_RE = re.compile(r"/(lab|tree)(/[A-Za-z0-9_.-]+)*/?")


def _url_path(v: Any) -> str:
    accepted = ('"/lab" (JupyterLab) or "/tree" (the classic Notebook view), optionally followed by '
                'a path below it such as "/lab/tree/course"')
    if (not isinstance(v, str) or not _DEFAULT_URL_RE.fullmatch(v)
            or any(part in (".", "..") for part in v.split("/"))):
        raise ValueError(accepted)
    return v




def _ip_or_empty(v: Any) -> str:
    import ipaddress

    accepted = 'an IP address such as "127.0.0.1" or "::", or "" for all addresses'
    if not isinstance(v, str):
        raise ValueError(accepted)
    if v == "":
        return v
    try:
        ipaddress.ip_address(v)
    except ValueError:
        raise ValueError(accepted) from None
    return v




def _one_of(*choices: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in choices:
            raise ValueError("one of " + ", ".join(f'"{c}"' for c in choices))
        return v
    return check


def _log_level(v: Any) -> str:
    levels = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    if not isinstance(v, str) or v.upper() not in levels:
        raise ValueError("one of " + ", ".join(levels))
    return v.upper()


class _SubkeyError(ValueError):
    """A bad entry inside a table value: names the entry, not just the table."""

    def __init__(self, subkey: str, value: Any, accepted: str):
        self.subkey, self.value = subkey, value
        super().__init__(accepted)


_NAME_RE = users.NAME_RE  # user and group names follow the same rule


def _device_group(v: Any) -> str:
    accepted = '"" (none) or an existing group of its own, e.g. "jupyterhub-gpu" (groupadd --system jupyterhub-gpu)'
    if v == "":
        return v
    if not isinstance(v, str) or not _NAME_RE.fullmatch(v):
        raise ValueError(accepted)
    try:
        grp.getgrnam(v)
    except KeyError:
        raise ValueError(f"there is no group {v}; accepted: {accepted}") from None
    return v


def _quota_table(kind: str) -> Callable[[Any], dict[str, int]]:
    def check(v: Any) -> dict[str, int]:
        if not isinstance(v, dict):
            raise ValueError(f"a table of {kind} name = number of GPUs, e.g. {{ alice = 2 }}")
        for name, n in v.items():
            if not _NAME_RE.fullmatch(name):
                raise _SubkeyError(name, n, f"a {kind} name (lowercase letters, digits, '_', '-')")
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_GPUS:
                raise _SubkeyError(name, n, f"an integer from 0 to {MAX_GPUS}")
        return dict(v)
    return check


def _size_table(kind: str) -> Callable[[Any], dict[str, int]]:
    def check(v: Any) -> dict[str, int]:
        if not isinstance(v, dict):
            raise ValueError(f'a table of {kind} name = size, e.g. {{ alice = "64G" }}')
        out = {}
        for name, size in v.items():
            if not _NAME_RE.fullmatch(name):
                raise _SubkeyError(name, size, f"a {kind} name (lowercase letters, digits, '_', '-')")
            try:
                out[name] = _size_or_empty(size)
            except ValueError as e:
                raise _SubkeyError(name, size, str(e)) from None
            if out[name] is None:
                raise _SubkeyError(name, size, 'a size such as "64G"')
        return out
    return check


def _cpu_table(kind: str) -> Callable[[Any], dict[str, float]]:
    def check(v: Any) -> dict[str, float]:
        if not isinstance(v, dict):
            raise ValueError(f"a table of {kind} name = cores, e.g. {{ alice = 8 }}")
        out = {}
        for name, n in v.items():
            if not _NAME_RE.fullmatch(name):
                raise _SubkeyError(name, n, f"a {kind} name (lowercase letters, digits, '_', '-')")
            try:
                out[name] = number_in(n, 0.01, 1024)
            except ValueError as e:
                raise _SubkeyError(name, n, str(e)) from None
        return out
    return check


def _total_memory(v: Any) -> int | str | None:
    if v == "auto":
        return v
    try:
        return _size_or_empty(v)
    except ValueError:
        raise ValueError('"auto" (all but 2 GiB, at most half kept back), a size such as "96G", '
                         'or "" for no cap') from None


def _total_cpu(v: Any) -> float | str:
    if v == "auto":
        return v
    try:
        return number_in(v, 0, 1024)
    except ValueError:
        raise ValueError('"auto" (all cores but one), a number of cores from 0.01 to 1024, or 0 for no cap') \
            from None


class _NotShown:
    """A value an error message must not print (it may be a secret)."""

    def __repr__(self) -> str:
        return "(value not shown)"


# appliance.toml is readable by every local account: a name that says it holds a
# secret goes into [spawner] environment_file, root's own file, instead. By word,
# so TOKENIZERS_PARALLELISM or KEYRING_BACKEND stay accepted.
_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL", "CREDENTIALS")
ENV_FILE_RULE = ("a file owned by root that nobody else may read or write (mode 0600), in directories only root "
                 "can change, of NAME=value lines (# comments)")


def looks_secret(name: str) -> bool:
    return any(word.endswith(_SECRET_WORDS) for word in name.upper().split("_"))


def _env_value(name: str, value: Any) -> None:
    if not isinstance(value, str) or len(value) > 4096 or any(c in value for c in "\x00\r\n"):
        raise _SubkeyError(name, _NotShown(), "a one-line text of at most 4096 characters")


def _environment(v: Any) -> dict[str, str]:
    if not isinstance(v, dict):
        raise ValueError('a table of NAME = "value", e.g. { HF_HOME = "/data/hf" }')
    for name, value in v.items():
        try:
            protocol.admin_env_name(name)
        except ValueError as e:
            raise _SubkeyError(name, value, str(e)) from None
        if looks_secret(name):
            raise _SubkeyError(name, _NotShown(), "a name that holds no secret: this file is readable by every "
                               f"local account; put {name} in the file [spawner] environment_file names ("
                               f"{ENV_FILE_RULE}), e.g. environment_file = \"/etc/jupyterhub/spawner.env\"")
        _env_value(name, value)
    return dict(v)


def _environment_file(v: Any) -> str:
    if v == "":
        return v
    if not isinstance(v, str) or not _ABS_PATH.fullmatch(v) or posixpath.normpath(v) != v:
        raise ValueError(f'"" for none, or the absolute path of {ENV_FILE_RULE}, e.g. "/etc/jupyterhub/spawner.env"')
    return v


_ABS_PATH = re.compile(r"/[^\x00-\x1f\x7f]{1,4095}")


class RootFileError(ValueError):
    """A root-only file the configuration names cannot be used; says why, never a
    value from it."""


class EnvFileError(RootFileError):
    """[spawner] environment_file cannot be used."""


def read_root_file(path: str, where: str, rule: str, limit: int = 256 * 1024) -> str:
    """A file only root may read, write or replace, read by root: a secret of the
    configuration. `where` names the setting and `rule` what the file must be, for
    the error (RootFileError). Nothing but root may change a directory above it
    either: systemd's LoadCredential= (PID 1) follows links."""
    try:
        found = root_only.replaceable((os.path.abspath(path), os.path.realpath(path)), itself=False)
        fd = os.open(os.path.realpath(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise RootFileError(f"{where}: cannot read {e.filename or path} ({e.strerror}); it must be {rule}") \
            from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if found:
            raise RootFileError(f"{where}: {found[0]} above it is {found[1]}; it must be {rule}")
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o077:
            raise RootFileError(f"{where}: it has owner uid {st.st_uid} and mode {stat.S_IMODE(st.st_mode):04o}; it "
                                f"must be {rule}: sudo chown root: {path} && sudo chmod 0600 {path}")
        return f.read(limit).decode("utf-8", "replace")


def read_environment_file(path: str, listed: dict[str, str]) -> dict[str, str]:
    """The variables of [spawner] environment_file, read by root (the daemon at each
    spawn, applctl reload). `listed`: [spawner] environment, which may not repeat a name."""
    where = f"[spawner] environment_file = {path!r}"
    try:
        text = read_root_file(path, where, ENV_FILE_RULE)
    except RootFileError as e:
        raise EnvFileError(str(e)) from None
    env: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        try:
            if not eq:
                raise ValueError("a NAME=value line")
            protocol.admin_env_name(name)
            _env_value(name, value)
            if name in listed or name in env:
                raise ValueError(f"a name set once ({name} is also in [spawner] environment or earlier in the file)")
        except _SubkeyError as e:
            raise EnvFileError(f"{where}: line {n} ({name}) is not accepted: {e}") from None
        except ValueError as e:
            raise EnvFileError(f"{where}: line {n} is not accepted: {e}") from None
        env[name] = value
    return env


# The highest daemon.min_uid: UID_MAX of login.defs (Debian, Ubuntu, Arch), the last
# uid useradd gives a person. Above it come systemd-homed's users (60001-60513), the
# uids of DynamicUser= services (61184-65519: the proxy, every visitor's server),
# nobody (65534) and the ranges of containers (524288 and up); a floor there would
# shut out every person and still let those in.
MIN_UID_MAX = 60000


def _min_uid(v: Any) -> int:
    try:
        return int_in(v, 1, MIN_UID_MAX)
    except ValueError:
        raise ValueError(f"an integer from 1 to {MIN_UID_MAX} (UID_MAX of login.defs); above it are "
                         "systemd's dynamic users (61184-65519), nobody (65534) and containers, not people") from None


def _abs_path_or_empty(what: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        accepted = f'the absolute path of {what}, e.g. "/srv/workshop", or "" for none'
        if not isinstance(v, str) or (v and (not v.startswith("/") or posixpath.normpath(v) != v or v == "/"
                                             or len(v) > 1024 or any(c in v for c in "\x00\n\r:"))):
            raise ValueError(accepted)
        return v
    return check


def _visible_paths(v: Any) -> list[str]:
    accepted = "a list of absolute paths of folders below " + ", ".join(ephemeral.HIDDEN) + ', e.g. ["/opt/cuda"]'
    if not isinstance(v, list) or len(v) > 32:
        raise ValueError(accepted)
    for p in v:
        if (not isinstance(p, str) or posixpath.normpath(p) != p or len(p) > 1024 or any(c in p for c in "\x00\n\r")
                or not any(p.startswith(top + "/") for top in ephemeral.HIDDEN)):
            raise ValueError(accepted)
    return list(dict.fromkeys(v))


def _name(v: Any) -> str:
    if not isinstance(v, str) or not _NAME_RE.fullmatch(v):
        raise ValueError("a group name: 1 to 32 lowercase letters, digits, '_' and '-', starting with a letter or '_'")
    return v


def _groups(v: Any) -> list[str]:
    accepted = 'a list of group names, e.g. ["sudo", "docker"]'
    if not isinstance(v, list) or len(v) > 256 or not all(isinstance(g, str) and _NAME_RE.fullmatch(g) for g in v):
        raise ValueError(accepted)
    return list(dict.fromkeys(v))


# --- single sign-on ([auth], [oidc]) -------------------------------------------------

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
_CLAIM_RE = re.compile(r"[A-Za-z0-9_:./-]{1,128}")
_CLIENT_ID_RE = re.compile(r"[\x21-\x7e]{1,255}")  # printable, no spaces (RFC 6749 A.1: VSCHAR)


def _issuer(v: Any) -> str:
    """The provider's issuer URL, as its discovery document names it. https: the
    client secret and every login's code travel to it; plain http only to a provider
    on this machine (loopback), where nobody on the way could read them."""
    from urllib.parse import urlsplit

    accepted = ('"" (none), or the provider\'s issuer URL, e.g. "https://login.example.org/realms/lab": '
                'https:// with no query or fragment (http:// only for a provider on 127.0.0.1, [::1] or localhost)')
    if v == "":
        return v
    if not isinstance(v, str) or len(v) > 1024 or any(c in v for c in " \x00\r\n\t\\"):
        raise ValueError(accepted)
    try:
        u = urlsplit(v)
        u.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        raise ValueError(accepted) from None
    loopback = u.hostname in LOOPBACK_HOSTS
    if (not u.hostname or u.query or u.fragment or "@" in u.netloc
            or not (u.scheme == "https" or (u.scheme == "http" and loopback))):
        raise ValueError(accepted)
    return v


def _client_id(v: Any) -> str:
    if v == "" or (isinstance(v, str) and _CLIENT_ID_RE.fullmatch(v)):
        return v
    raise ValueError('"" (none), or the client id the provider gave this hub: 1 to 255 printable characters, '
                     'no spaces')


def _secret_path(v: Any) -> str:
    if not isinstance(v, str) or not _ABS_PATH.fullmatch(v) or posixpath.normpath(v) != v or v == "/":
        raise ValueError(f"the absolute path of {SECRET_FILE_RULE}, e.g. \"/etc/jupyterhub/oidc-client-secret\"")
    return v


def _claim(v: Any) -> str:
    if not isinstance(v, str) or not _CLAIM_RE.fullmatch(v):
        raise ValueError("the name of a claim, e.g. \"preferred_username\": 1 to 128 letters, digits and _ : . / -")
    return v


def _domain(v: Any) -> str:  # [oidc] username_domain: the DOMAIN of claims NAME@DOMAIN (a UPN)
    if v == "" or (isinstance(v, str)
                   and re.fullmatch(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z0-9-]+", v.lower())):
        return v.lower()
    raise ValueError('"" (the claim is the account name), or the domain of names like alice@contoso.edu, e.g. '
                     '"contoso.edu": labels of letters, digits and -, joined by dots, no @')


def _scopes(v: Any) -> list[str]:
    accepted = 'a list of scopes with "openid" among them, e.g. ["openid", "profile", "email", "groups"]'
    if (not isinstance(v, list) or not 1 <= len(v) <= 32 or "openid" not in v
            or not all(isinstance(s, str) and _CLAIM_RE.fullmatch(s) for s in v)):
        raise ValueError(accepted)
    return list(dict.fromkeys(v))


def _provider_groups(v: Any) -> list[str]:
    """Group names as the provider writes them in the groups claim: a Keycloak path
    ("/lab/gpu"), an Entra object id, a plain name."""
    accepted = 'a list of group names as the provider\'s groups claim gives them, e.g. ["lab", "/staff/gpu"]'
    if (not isinstance(v, list) or len(v) > 256
            or not all(isinstance(g, str) and 1 <= len(g) <= 256 and g.isprintable() for g in v)):
        raise ValueError(accepted)
    return list(dict.fromkeys(v))


def _accounts(v: Any) -> str:
    if v in ("existing", "create"):
        return v
    raise ValueError('"existing" (the provider\'s name must be an account this machine knows) or "create" (the '
                     "daemon makes a local account at the first login, in [oidc] uid_min..uid_max)")


# Where accounts = "create" puts its uids: above UID_MAX of login.defs (60000, people
# useradd makes), systemd's dynamic users (61184-65519: the proxy, visitors) and
# nobody (65534); below SUB_UID_MIN (100000), where the subordinate uids of rootless
# containers begin, so no person's user namespace can map onto an account made here.
# Above every daemon.min_uid (MIN_UID_MAX), so the daemon serves them.
SSO_UIDS = (65536, 99999)


def _sso_uid(v: Any) -> int:
    try:
        return int_in(v, *SSO_UIDS)
    except ValueError:
        raise ValueError(f"an integer from {SSO_UIDS[0]} to {SSO_UIDS[1]}: above the uids of people, systemd's "
                         "dynamic users and nobody, below the subordinate uids of containers (100000)") from None


SECRET_FILE_RULE = ("a file owned by root that nobody else may read or write (mode 0600), in directories only root "
                    "can change, holding the client secret on one line")
_OIDC_ROOT_ONLY = "decides who may log in, as which local account"


# --- several hosts: [cluster] (Slurm) --------------------------------------------------

# Names that later become sbatch arguments, which the root daemon passes on as the
# person's uid: no option of their own (no leading '-'), no '=', ',' or space, nothing
# a shell or Slurm's own parsers would split.
_SLURM_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SLURM_NAME_RULE = "1 to 64 letters, digits, '_', '.' and '-', starting with a letter or digit"


def _slurm_name(what: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v == "" or (isinstance(v, str) and _SLURM_NAME_RE.fullmatch(v)):
            return v
        raise ValueError(f'"" ({what}), or a Slurm name: {SLURM_NAME_RULE}')
    return check


# sbatch --time: "MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS".
_TIME_FORMS = (
    (re.compile(r"([0-9]{1,6})"), ("m",)),
    (re.compile(r"([0-9]{1,6}):([0-9]{2})"), ("m", "s")),
    (re.compile(r"([0-9]{1,4}):([0-9]{2}):([0-9]{2})"), ("h", "m", "s")),
    (re.compile(r"([0-9]{1,3})-([0-9]{1,2})"), ("d", "h")),
    (re.compile(r"([0-9]{1,3})-([0-9]{1,2}):([0-9]{2})"), ("d", "h", "m")),
    (re.compile(r"([0-9]{1,3})-([0-9]{1,2}):([0-9]{2}):([0-9]{2})"), ("d", "h", "m", "s")),
)
_TIME_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
MAX_TIME_LIMIT = 365 * 86400


def time_limit_seconds(text: str) -> int:
    """A Slurm time limit -> seconds; ValueError if it is not one of sbatch's forms,
    a minute or second of 60 or more, an hour of 24 or more after a day, zero
    (which Slurm reads as no limit) or more than a year."""
    for pattern, units in _TIME_FORMS:
        m = pattern.fullmatch(text)
        if not m:
            continue
        parts = dict(zip(units, map(int, m.groups()), strict=True))
        if (("s" in parts and len(units) > 1 and parts["s"] > 59) or ("m" in parts and len(units) > 2
                and parts["m"] > 59) or ("h" in parts and "d" in parts and parts["h"] > 23)):
            break
        seconds = sum(_TIME_UNITS[u] * n for u, n in parts.items())
        if 0 < seconds <= MAX_TIME_LIMIT:
            return seconds
        break
    raise ValueError(text)


def _time_limit(what: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v == "":
            return v
        try:
            if isinstance(v, str):
                time_limit_seconds(v)
                return v
        except ValueError:
            pass
        raise ValueError(f'"" ({what}), or a Slurm time limit of at least a minute and at most 365 days: "MM", '
                         '"MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM" or "D-HH:MM:SS", e.g. "480" or "1-00:00:00"')
    return check


# sbatch options an administrator may add to every server's job. Each only narrows
# where or when a job runs among what Slurm already lets that person have, and Slurm
# itself checks the person may use it; none names a file, a program, an environment,
# a uid, or an amount the appliance sets itself (GPUs from the quota, memory and CPU
# from [limits], partition, account, qos and time from [cluster]).
_FEATURE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}(?:[&|][A-Za-z0-9_.-]{1,64}){0,15}")


def _constraint(v: Any) -> str:
    if not isinstance(v, str) or not _FEATURE_RE.fullmatch(v):
        raise ValueError('node features joined by & (all) or | (any), e.g. "a100" or "a100&nvlink": each '
                         "1 to 64 letters, digits, '_', '.' and '-'")
    return v


def _reservation(v: Any) -> str:
    if not isinstance(v, str) or not _SLURM_NAME_RE.fullmatch(v):
        raise ValueError(f"the name of a Slurm reservation: {SLURM_NAME_RULE}")
    return v


def _nice(v: Any) -> int:
    try:
        return int_in(v, 0, 10000)
    except ValueError:
        raise ValueError("an integer from 0 to 10000: how much lower the jobs' priority is (never higher: "
                         "only Slurm's operators may raise it)") from None


def _exclusive(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("true (every server's job has its nodes to itself) or false")
    return v


# option (as in sbatch --OPTION, without the dashes) -> (check, why it is safe)
SBATCH_OPTIONS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "constraint": (_constraint, "only picks among the partition's nodes by their features"),
    "reservation": (_reservation, "Slurm lets the job in only if the person may use that reservation"),
    "nice": (_nice, "only lowers the jobs' priority; raising it stays Slurm's operators' right"),
    "exclusive": (_exclusive, "only keeps other jobs off the node; costs capacity, gives no access"),
    "gres-flags": (_one_of("enforce-binding", "disable-binding"), "only how GPUs and CPU cores are paired"),
}


def _sbatch_options(v: Any) -> dict[str, Any]:
    accepted = ("a table of sbatch options, from: " + ", ".join(SBATCH_OPTIONS)
                + ', e.g. { constraint = "a100", nice = 100 }')
    if not isinstance(v, dict):
        raise ValueError(accepted)
    out = {}
    for name, value in v.items():
        if name not in SBATCH_OPTIONS:
            raise _SubkeyError(name, value, f"an option from {', '.join(SBATCH_OPTIONS)} (partition, account, qos "
                               "and time_limit are [cluster]'s own keys; GPUs, memory and CPUs come from the quota "
                               "and [limits]; other options are not offered)")
        try:
            out[name] = SBATCH_OPTIONS[name][0](value)
        except ValueError as e:
            raise _SubkeyError(name, value, str(e)) from None
    return out


_CLUSTER_ROOT_ONLY = "decides where every server runs: as a Slurm job on other machines, or on this one"

MAX_GPUS = 64

# section -> key -> Field. The default appliance.toml documents the same keys.
SCHEMA: dict[str, dict[str, Field]] = {
    "hub": {
        "port": Field(8000, "public port of the proxy", _int(1, 65535)),
        "bind_address": Field("", "address the proxy listens on", _ip_or_empty),
        "hub_port": Field(8081, "the hub's internal port, on loopback", _int(1, 65535)),
        "proxy_api_port": Field(8001, "the proxy's API port, on loopback", _int(1, 65535)),
        "dashboard_port": Field(8082, "the GPU dashboard's port, on loopback ([dashboard])", _int(1, 65535)),
        "metrics_port": Field(9445, "the Prometheus metrics port, on loopback ([metrics] access)", _int(1, 65535)),
        "log_level": Field("INFO", "hub log level", _log_level),
        # Root only: ephemeral gives anyone who opens the hub's address a server, with no login.
        "mode": Field("accounts", "who gets a server: PAM accounts, or throwaway visitors (root only)",
                      _one_of("accounts", "ephemeral"),
                      root_only="decides who gets a server: people with an account, or anyone who opens the "
                                "hub's address, with no login"),
    },
    "spawner": {
        "default_url": Field("/lab", "page a user lands on", _url_path),
        "mem_limit": Field("", "deprecated: [limits] mem_limit", _size_or_empty),
        "cpu_limit": Field(0, "deprecated: [limits] cpu_limit", _number(0, 1024)),
        "start_timeout": Field(120, "seconds a server may take to start", _int(10, 3600)),
        "http_timeout": Field(60, "seconds a started server may take to answer", _int(5, 3600)),
        "environment": Field({}, "extra environment variables of every server (no secrets: this file is "
                             "world-readable)", _environment),
        "environment_file": Field("", "root's file of NAME=value lines: secret variables of every server",
                                  _environment_file,
                                  root_only="names a root-only file whose variables every server gets"),
        "jupyterlab_news": Field(False, "JupyterLab's Jupyter news and update check", _bool),
    },
    "daemon": {
        "min_uid": Field(1000, "lowest uid that may get a server (1 to 60000: above it are systemd's "
                         "dynamic users, nobody and containers, not people)", _min_uid),
        "privileged_groups": Field(list(root_only.PRIVILEGED_GROUPS),
                                   "groups that are root in all but name: no server for their members", _groups),
        "allow_privileged_users": Field(False, "start servers for members of privileged_groups anyway", _bool),
    },
    "gpu": {
        "quota": Field(1, "GPUs a user may hold by default", _int(0, MAX_GPUS)),
        "quota_groups": Field({}, "per-group quotas (the highest applies)", _quota_table("group")),
        "quota_users": Field({}, "per-user quotas (win over groups)", _quota_table("user")),
        "queue": Field(True, "wait for a GPU when none is free, first come first served", _bool),
        "queue_timeout": Field(1800, "seconds a spawn may wait in the GPU queue", _int(10, 7 * 86400)),
        "sample_interval": Field(10, "seconds between GPU utilization samples", _int(1, 3600)),
        "idle_threshold": Field(5, "GPU utilization percent at or below which a GPU is idle", _int(0, 100)),
        "idle_timeout": Field(1800, "seconds all of a server's GPUs must stay idle to count as idle",
                              _int(10, 30 * 86400)),
        # Root only: every server with a GPU gets this group's access to files.
        "device_group": Field("", "group of the NVIDIA device files (NVreg_DeviceFileGID): servers holding GPUs get it",
                              _device_group, root_only="gives every server that holds a GPU that group's access "
                                                       "to files"),
        "reclaim": Field("when-needed", "stop servers whose GPUs are idle: when someone waits, always, never",
                         _one_of("when-needed", "always", "never")),
        "shared": Field({}, "GPUs several servers hold at once: a GPU's NVML index or UUID = its seats", _shared),
        "share_memory": Field({}, "a seat's GPU memory budget per shared GPU (default: its memory / its seats)",
                              _share_memory),
        "share_grace": Field(120, "seconds a server may stay over its GPU memory share before its largest GPU "
                             "process is killed", _int(10, 86400)),
    },
    "limits": {
        "mem_limit": Field("", "memory limit per server", _size_or_empty),
        "cpu_limit": Field(0, "CPU limit per server in cores (0: none)", _number(0, 1024)),
        "tasks_max": Field(0, "processes and threads per server (0: systemd's default)", _zero_or_int(16, 1_000_000)),
        "mem_limit_groups": Field({}, "per-group memory limits (the highest applies)", _size_table("group")),
        "mem_limit_users": Field({}, "per-user memory limits (win over groups)", _size_table("user")),
        "cpu_limit_groups": Field({}, "per-group CPU limits (the highest applies)", _cpu_table("group")),
        "cpu_limit_users": Field({}, "per-user CPU limits (win over groups)", _cpu_table("user")),
        "total_memory": Field("auto", "memory cap of all user servers together", _total_memory),
        "total_cpu": Field("auto", "CPU cap of all user servers together, in cores", _total_cpu),
    },
    "ephemeral": {
        "max_visitors": Field(20, "visitors with a server at once", _int(1, 10_000)),
        "warm_pool": Field(2, "servers started ahead of visitors", _int(0, 100)),
        "password_file": Field("", "a bcrypt hash visitors must match (applctl ephemeral password set)",
                               _abs_path_or_empty("a file with a bcrypt hash")),
        "shared_dir": Field("", "a folder every visitor sees read-only at ~/shared",
                            _abs_path_or_empty("a folder")),
        "mem_limit": Field("2G", "memory limit of a visitor's server", _size_or_empty),
        "cpu_limit": Field(1, "CPU limit of a visitor's server in cores (0: none)", _number(0, 1024)),
        "gpus": Field(0, "GPUs of a visitor's server", _int(0, MAX_GPUS)),
        "idle_timeout": Field(900, "idle seconds before a visitor's server is stopped", _int(30, 30 * 86400)),
        "max_age": Field(14400, "seconds after which a visitor's server is stopped (0: never)",
                         _zero_or_int(60, 365 * 86400)),
        "network": Field("loopback", "what a visitor's server may reach: none (the hub and proxy's 127.0.0.1), "
                         "loopback (this machine) or internet (all but cloud metadata)",
                         _one_of(*ephemeral.NETWORKS)),
        "content_hosts": Field([], "git servers a visitor's server may also reach, for content links "
                               "(host names, resolved by the daemon at each spawn, or IP addresses)",
                               content.check_hosts),
        "visible_paths": Field([], "folders below " + ", ".join(ephemeral.HIDDEN) + " that visitors see read-only "
                               "(root only)", _visible_paths,
                               root_only="shows anonymous visitors folders of this machine"),
    },
    "dashboard": {
        "enabled": Field(True, "the administrators' GPU dashboard at /services/gpus/", _bool),
    },
    "metrics": {
        "access": Field("loopback", "who may read the Prometheus metrics: loopback (no token), "
                        "token (the hub's /hub/metrics with a read:metrics token) or off",
                        _one_of("loopback", "token", "off")),
    },
    "culler": {
        "enabled": Field(True, "stop idle servers", _bool),
        "timeout": Field(3600, "idle seconds before a server is stopped", _int(30, 30 * 86400)),
        "every": Field(300, "seconds between the culler's looks", _int(10, 86400)),
        "max_age": Field(0, "seconds after which a server is stopped even if active (0: never)",
                         _zero_or_int(60, 365 * 86400)),
        "cull_admin_users": Field(True, "stop idle servers of hub admins too", _bool),
        "concurrency": Field(10, "servers the culler stops at once", _int(1, 100)),
    },
    "auth": {
        "type": Field("pam", "how people log in: pam (their password on this machine) or oidc (single sign-on, [oidc])",
                      _one_of("pam", "oidc"), root_only=_OIDC_ROOT_ONLY),
    },
    "oidc": {
        "issuer": Field("", "the OpenID provider's issuer URL (discovered at .well-known/openid-configuration)",
                        _issuer, root_only=_OIDC_ROOT_ONLY),
        "client_id": Field("", "the client id the provider gave this hub", _client_id, root_only=_OIDC_ROOT_ONLY),
        "client_secret_file": Field("/etc/jupyterhub/oidc-client-secret", "root's 0600 file of the client secret",
                                    _secret_path, root_only=_OIDC_ROOT_ONLY),
        "scopes": Field(["openid", "profile", "email"], "scopes the hub asks for", _scopes),
        "username_claim": Field("preferred_username", "the claim that names the local account", _claim,
                                root_only=_OIDC_ROOT_ONLY),
        "username_domain": Field("", "the domain of a username claim NAME@DOMAIN (a UPN): NAME is the local "
                                 "account, other domains are refused (\"\": the claim is the account)", _domain,
                                 root_only=_OIDC_ROOT_ONLY),
        "groups_claim": Field("groups", "the claim that lists the person's groups", _claim,
                              root_only=_OIDC_ROOT_ONLY),
        "allowed_groups": Field([], "provider groups whose members may log in ([]: any)", _provider_groups,
                                root_only=_OIDC_ROOT_ONLY),
        "admin_groups": Field([], "provider groups whose members are hub admins", _provider_groups,
                              root_only=_OIDC_ROOT_ONLY),
        "accounts": Field("existing", "how a login becomes a local account: existing, or create (by the daemon, "
                          "at the first login)", _accounts, root_only=_OIDC_ROOT_ONLY),
        "uid_min": Field(70000, "accounts = \"create\": the first uid of the accounts it makes", _sso_uid,
                         root_only=_OIDC_ROOT_ONLY),
        "uid_max": Field(70999, "accounts = \"create\": the last uid; no more accounts once the range is full",
                         _sso_uid, root_only=_OIDC_ROOT_ONLY),
        "group": Field("jupyterhub-sso", "accounts = \"create\": the primary group of the accounts it makes, theirs "
                       "alone", _name, root_only=_OIDC_ROOT_ONLY),
        "claims_from": Field("userinfo", "where the person's claims come from: userinfo (the provider's endpoint) or "
                             "id_token (the ID token, its signature checked; Entra ID's groups are only there)",
                             _one_of("userinfo", "id_token"), root_only=_OIDC_ROOT_ONLY),
        "refresh_age": Field(300, "seconds after which the hub checks a person with the provider again (a person "
                             "disabled there loses the session and server)", _int(10, 86400),
                             root_only="decides how long a person the provider disabled keeps their server"),
    },
    "tokens": {
        "max_days_under_sudo": Field(90, "longest life in days of a token a jupyterhub-admin issues with "
                                     "sudo applctl token (root only)", _int(1, 3650), root_only=True),
    },
    "cluster": {
        "engine": Field("local", "where servers run: local (this host) or slurm (jobs on the cluster's nodes)",
                        _one_of("local", "slurm"), root_only=_CLUSTER_ROOT_ONLY),
        "partition": Field("", "the Slurm partition of every server's job (\"\": Slurm's default partition)",
                           _slurm_name("Slurm's default partition")),
        "account": Field("", "the Slurm account every server's job is charged to (\"\": each person's default)",
                          _slurm_name("each person's default account"),
                          root_only="decides which Slurm account pays for every server"),
        "qos": Field("", "the Slurm QOS of every server's job (\"\": the default)", _slurm_name("the default QOS")),
        "time_limit": Field("", "the longest a server's job runs (\"\": the partition's default)",
                           _time_limit("the partition's default")),
        "extra_sbatch_options": Field({}, "more sbatch options, from an allow-list: " + ", ".join(SBATCH_OPTIONS),
                                      _sbatch_options),
    },
}


def root_only_keys() -> list[tuple[str, str]]:
    """(section, key) of every setting only root may change."""
    return [(s, k) for s, fields in SCHEMA.items() for k, f in fields.items() if f.root_only]


class Config:
    """The validated configuration: `cfg["hub"]["port"]`, defaults filled in."""

    def __init__(self, values: dict[str, dict[str, Any]], path: Path, warnings: list[str] | None = None):
        self.values = values
        self.path = path
        self.warnings = warnings or []  # accepted, but worth telling the administrator

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {s: dict(v) for s, v in self.values.items()}


# [profiles.NAME]: choices on the spawn form. Their keys, with defaults.
PROFILE_FIELDS: dict[str, Field] = {
    "display_name": Field(None, "what the form shows", None),  # checked in _profiles
    "gpus": Field(0, "GPUs of this profile", _int(0, MAX_GPUS)),
    "mem_limit": Field("", "memory limit", _size_or_empty),
    "cpu_limit": Field(0, "CPU limit in cores (0: none)", _number(0, 1024)),
    "mig": Field("", "the MIG profile its GPUs must be (\"\": any GPU)", _mig_profile),
    "gpu_share": Field("", "a seat on a shared GPU: \"1/N\" for a GPU [gpu] shared gives N seats", _gpu_share),
    # [cluster] engine = "slurm": this profile's own; "" takes [cluster]'s.
    "partition": Field("", "its Slurm partition", _slurm_name("[cluster] partition")),
    "qos": Field("", "its Slurm QOS", _slurm_name("[cluster] qos")),
    "time_limit": Field("", "its Slurm time limit", _time_limit("[cluster] time_limit")),
}


def _profiles(data: Any, path: Path | str) -> dict[str, dict[str, Any]]:
    if not isinstance(data, dict):
        raise ConfigError(path, "profiles", data, "tables [profiles.NAME]")
    out = {}
    for name, table in data.items():
        key = f"profiles.{name}"
        if not _NAME_RE.fullmatch(name):
            raise ConfigError(path, key, table, "a profile name: lowercase letters, digits, '_', '-'")
        if not isinstance(table, dict):
            raise ConfigError(path, key, table, f"a table [{key}] with " + ", ".join(PROFILE_FIELDS))
        for k in table:
            if k not in PROFILE_FIELDS:
                raise ConfigError(path, f"{key}.{k}", table[k], "known keys are " + ", ".join(PROFILE_FIELDS))
        label = table.get("display_name")
        if not isinstance(label, str) or not 1 <= len(label.strip()) <= 100:
            raise ConfigError(path, f"{key}.display_name", label, "a text of 1 to 100 characters (required)")
        profile = {"display_name": label.strip()}
        for k, field in PROFILE_FIELDS.items():
            if k != "display_name":
                raw = table.get(k, field.default)
                try:
                    profile[k] = field.check(raw)
                except ValueError as e:
                    raise ConfigError(path, f"{key}.{k}", raw, str(e)) from None
        if profile["mig"] and not profile["gpus"]:
            raise ConfigError(path, f"{key}.mig", profile["mig"],
                              f"set only with gpus of 1 or more in [{key}], which has none")
        if profile["gpu_share"] and (profile["gpus"] != 1 or profile["mig"]):
            raise ConfigError(path, f"{key}.gpu_share", table["gpu_share"],
                              f"set only with gpus = 1 and no mig in [{key}]: a seat is on one whole GPU")
        out[name] = profile
    return out


# [apps.NAME]: web apps beside JupyterLab, started by jupyter-server-proxy inside each
# user's server (docs/apps.md). The values cross into every user's server.
APP_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
# What the command may hold in braces, filled in by the server: {unix_socket} (the app
# listens there itself) or {port} (the app listens on 127.0.0.1:{port} in a network
# namespace of its own; appliance/app_bridge.py), and {base_url}.
APP_PLACEHOLDERS = ("port", "unix_socket", "base_url")
_BRACES = re.compile(r"\{([^{}]*)\}")
MAX_APP_TIMEOUT = 600


def _app_command(v: Any) -> list[str]:
    accepted = ('a list of 1 to 64 texts, the program first, e.g. ["/opt/apps/tensorboard/bin/tensorboard", '
                '"--port", "{port}"], in which {port} or {unix_socket} (one of them) and {base_url} are filled '
                'in, and no other braces')
    if not isinstance(v, list) or not 1 <= len(v) <= 64:
        raise ValueError(accepted)
    for arg in v:
        if (not isinstance(arg, str) or not arg or len(arg) > 4096 or any(c in arg for c in "\x00\r\n")
                or any(m not in APP_PLACEHOLDERS for m in _BRACES.findall(arg))
                or "{" in _BRACES.sub("", arg) or "}" in _BRACES.sub("", arg)):
            raise ValueError(accepted)
    if _BRACES.search(v[0]) or (os.sep in v[0] and (not v[0].startswith("/") or posixpath.normpath(v[0]) != v[0])):
        raise ValueError(accepted + "; the program is a name on the servers' PATH or an absolute path, "
                         "without braces")
    listens = [p for p in ("{port}", "{unix_socket}") if any(p in arg for arg in v)]
    if len(listens) != 1:
        raise ValueError(accepted + "; it must say where the app listens: {port} or {unix_socket}, one of them")
    return list(v)


def _app_title(v: Any) -> str:
    if not isinstance(v, str) or not 1 <= len(v.strip()) <= 100 or not v.isprintable():
        raise ValueError("a text of 1 to 100 characters, what the launcher shows")
    return v.strip()


def _app_icon(v: Any) -> str:
    accepted = ('"" (no icon) or the absolute path of an SVG file every user may read, e.g. '
                '"/usr/share/icons/tensorboard.svg"')
    if v == "":
        return v
    if (not isinstance(v, str) or not _ABS_PATH.fullmatch(v) or posixpath.normpath(v) != v or len(v) > 1024
            or not v.endswith(".svg")):
        raise ValueError(accepted)
    try:
        st = os.stat(v)
    except OSError as e:
        raise ValueError(f"{accepted}; cannot read it: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o004:
        raise ValueError(f"{accepted}; it is not a file that everyone may read (chmod a+r {v})")
    return v


APP_FIELDS: dict[str, Field] = {
    "command": Field(None, "the app's command; {port} or {unix_socket}, and {base_url}, are filled in", _app_command),
    "title": Field(None, "what JupyterLab's launcher shows (default: the app's name)", _app_title),
    "icon": Field("", "an SVG file for the launcher", _app_icon),
    "timeout": Field(30, "seconds the app may take to answer after it starts", _int(1, MAX_APP_TIMEOUT)),
    "environment": Field({}, "the app's extra environment variables, as [spawner] environment", _environment),
    "enabled": Field(True, "whether servers offer it", _bool),
}


def _apps(data: Any, path: Path | str) -> dict[str, dict[str, Any]]:
    if not isinstance(data, dict) or len(data) > 32:
        raise ConfigError(path, "apps", data, "at most 32 tables [apps.NAME]")
    out = {}
    for name, table in data.items():
        key = f"apps.{name}"
        if not APP_NAME_RE.fullmatch(name):
            raise ConfigError(path, key, table, "an app name: 1 to 32 lowercase letters, digits and '-', "
                              "starting and ending with a letter or digit")
        if not isinstance(table, dict):
            raise ConfigError(path, key, table, f"a table [{key}] with " + ", ".join(APP_FIELDS))
        for k in table:
            if k not in APP_FIELDS:
                raise ConfigError(path, f"{key}.{k}", table[k], "known keys are " + ", ".join(APP_FIELDS))
        if "command" not in table:
            raise ConfigError(path, f"{key}.command", None, "the app's command (required), e.g. "
                              '["/opt/apps/tensorboard/bin/tensorboard", "--port", "{port}"]')
        app = {}
        for k, field in APP_FIELDS.items():
            raw = table.get(k, name if k == "title" else field.default)
            try:
                app[k] = field.check(raw)
            except _SubkeyError as e:
                raise ConfigError(path, f"{key}.{k}.{e.subkey}", e.value, str(e)) from None
            except ValueError as e:
                raise ConfigError(path, f"{key}.{k}", raw, str(e)) from None
        out[name] = app
    return out


def validate(data: dict[str, Any], path: Path | str = DEFAULT_PATH) -> Config:
    """Check parsed TOML against SCHEMA; return a Config or raise ConfigError."""
    values: dict[str, dict[str, Any]] = {"profiles": _profiles(data.get("profiles", {}), path),
                                         "apps": _apps(data.get("apps", {}), path)}
    for section, table in data.items():
        if section in ("profiles", "apps"):
            continue
        if section not in SCHEMA:
            raise ConfigError(path, section, table, "known sections are " + ", ".join([*SCHEMA, "profiles", "apps"]))
        if not isinstance(table, dict):
            raise ConfigError(path, section, table, f"a table: [{section}]")
    for section, fields in SCHEMA.items():
        table = data.get(section, {})
        for key in table:
            if key not in fields:
                raise ConfigError(
                    path, f"{section}.{key}", table[key], f"known keys in [{section}] are " + ", ".join(fields)
                )
        values[section] = {}
        for key, field in fields.items():
            raw = table.get(key, field.default)
            try:
                values[section][key] = field.check(raw)
            except _SubkeyError as e:
                raise ConfigError(path, f"{section}.{key}.{e.subkey}", e.value, str(e)) from None
            except ValueError as e:
                raise ConfigError(path, f"{section}.{key}", raw, str(e)) from None
    _check_device_group(values, path)
    _check_oidc(values, path)
    return Config(values, Path(path), _migrate(data, values, path) + _cluster_notes(values, path))


def _cluster_notes(values: dict[str, dict[str, Any]], path: Path | str) -> list[str]:
    """Accepted, but worth saying: Slurm settings with nothing to act on them yet."""
    cluster = values["cluster"]
    slurm_keys = [f"cluster.{k}" for k in ("partition", "account", "qos", "time_limit", "extra_sbatch_options")
                  if cluster[k]]
    slurm_keys += [f"profiles.{n}.{k}" for n, p in values["profiles"].items() for k in ("partition", "qos",
                                                                                     "time_limit") if p[k]]
    if cluster["engine"] == "slurm":
        return [f'{path}: cluster.engine = "slurm" is accepted, but servers still start on this host: submitting '
                "them to Slurm is not implemented yet (applctl cluster check tests the cluster)"]
    if slurm_keys:
        return [f"{path}: {', '.join(slurm_keys)} take effect only with cluster.engine = \"slurm\""]
    return []


def _check_device_group(values: dict[str, dict[str, Any]], path: Path | str) -> None:
    """The GPU device files' group is given to servers: it must be theirs alone, not
    a privileged group (root in all but name) nor one the appliance's accounts have."""
    group = values.get("gpu", {}).get("device_group")
    if group and (group in values["daemon"]["privileged_groups"] or group in (HUB_USER, USERS_GROUP, ADMINS_GROUP)):
        raise ConfigError(path, "gpu.device_group", group,
                          "a group of its own for the GPU device files, e.g. \"jupyterhub-gpu\": not one of "
                          f"daemon.privileged_groups, nor {HUB_USER}, {USERS_GROUP} or {ADMINS_GROUP}")



def _check_oidc(values: dict[str, dict[str, Any]], path: Path | str) -> None:
    """Single sign-on needs the provider and this hub's client id at it; accounts =
    "create" a uid range and a group of its own."""
    oidc = values["oidc"]
    if oidc["accounts"] == "create":
        if oidc["uid_max"] < oidc["uid_min"]:
            raise ConfigError(path, "oidc.uid_max", oidc["uid_max"], f"at least oidc.uid_min ({oidc['uid_min']})")
        group = oidc["group"]
        if group in values["daemon"]["privileged_groups"] or group in (HUB_USER, USERS_GROUP, ADMINS_GROUP):
            raise ConfigError(path, "oidc.group", group, "a group of its own for the accounts single sign-on makes, "
                              f"e.g. \"jupyterhub-sso\": not one of daemon.privileged_groups, nor {HUB_USER}, "
                              f"{USERS_GROUP} or {ADMINS_GROUP}")
    if values["auth"]["type"] != "oidc":
        return
    for key, what in (("issuer", 'the provider\'s issuer URL, e.g. "https://login.example.org/realms/lab"'),
                      ("client_id", "the client id the provider gave this hub")):
        if not oidc[key]:
            raise ConfigError(path, f"oidc.{key}", "", f'{what}: required with [auth] type = "oidc"')


def sso_in_use(cfg: "Config") -> bool:
    """Whether people log in through single sign-on: [auth] type = "oidc", in
    accounts mode (visitors of ephemeral mode never log in)."""
    return cfg["auth"]["type"] == "oidc" and cfg["hub"]["mode"] == "accounts"


# The name under which systemd hands the client secret to the hub (LoadCredential=).
OIDC_CREDENTIAL = "oidc-client-secret"


def read_client_secret(path: str) -> str:
    """[oidc] client_secret_file, as root reads it (applctl reload, the generator)
    before systemd hands it to the hub: a root-only file of one line (RootFileError)."""
    where = f"[oidc] client_secret_file = {path!r}"
    secret = read_root_file(path, where, SECRET_FILE_RULE, limit=4096).strip()
    if not secret or "\n" in secret:
        raise RootFileError(f"{where}: it must hold the client secret on one line, and nothing else")
    return secret


# Keys that moved: (old section, key) -> new section. The old place is still read.
MOVED = {("spawner", "mem_limit"): "limits", ("spawner", "cpu_limit"): "limits"}


def _migrate(data: dict[str, Any], values: dict[str, dict[str, Any]], path: Path | str) -> list[str]:
    """Moved keys are still honoured, with a message saying where they live now."""
    warnings = []
    for (old, key), new in MOVED.items():
        if key in data.get(old, {}):
            warnings.append(f"{path}: {old}.{key} is deprecated: use {new}.{key}")
            if key not in data.get(new, {}):
                values[new][key] = values[old][key]
    return warnings


def load(path: Path | str = DEFAULT_PATH) -> Config:
    """Read and validate a configuration file. A missing file means all defaults."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return validate({}, path)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, "(file)", str(path), f"a readable UTF-8 file ({e})") from None
    return loads(text, path)


def loads(text: str, path: Path | str = DEFAULT_PATH) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "(syntax)", str(e), "valid TOML") from None
    return validate(data, path)


EX_CONFIG = 78  # sysexits.h; the units do not restart on it (RestartPreventExitStatus)


def exit_if_invalid(program: str, path: Path | str = DEFAULT_PATH) -> Config:
    """The check every service runs before starting (hub, proxy, daemon): the
    configuration, or exit with EX_CONFIG."""
    import sys

    try:
        cfg = load(path)
    except ConfigError as e:
        print(f"{program}: invalid configuration: {e}", file=sys.stderr, flush=True)
        raise SystemExit(EX_CONFIG) from None
    for line in cfg.warnings:
        print(f"{program}: {line}", file=sys.stderr, flush=True)
    return cfg
