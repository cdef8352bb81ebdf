"""Content links (nbgitpuller): which git servers a visitor's server may reach, as
the configuration, the daemon and its resolver unit share them (applctl link, in
appliance/cli/link.py, makes the links).

A link `BASE/hub/user-redirect/git-pull?repo=...&urlpath=lab/tree/...` makes the
person's server clone (or update) a git repository into their home and open it.
In ephemeral mode a visitor's server may reach only `[ephemeral] content_hosts`
beyond what `[ephemeral] network` allows: the root daemon resolves those names at
each spawn, in a unit of their own (the daemon itself has no network), allows the
addresses it found and pins them in the server's /etc/hosts, so the server's
lookups find exactly the addresses its firewall lets through (docs/ephemeral.md, "Content links").
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import sys
from typing import Any

MAX_HOSTS = 32

# A host name as DNS has it (RFC 1123 labels), or an IP address.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")
HOSTS_RULE = ('a list of at most 32 host names or IP addresses of git servers, e.g. ["github.com", '
              '"gitlab.example.org", "192.0.2.10"]')


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def check_host(host: Any) -> str:
    """A content host: a host name (lowercased) or an IP address; ValueError otherwise."""
    if isinstance(host, str) and is_address(host):
        return str(ipaddress.ip_address(host))
    if (not isinstance(host, str) or len(host) > 253 or not _HOST_RE.fullmatch(host.lower())
            or host.rstrip(".").replace(".", "").isdigit()):
        raise ValueError(HOSTS_RULE)
    return host.lower().rstrip(".")


def check_hosts(v: Any) -> list[str]:
    """[ephemeral] content_hosts."""
    if not isinstance(v, list) or len(v) > MAX_HOSTS:
        raise ValueError(HOSTS_RULE)
    return list(dict.fromkeys(check_host(h) for h in v))


# --- names to addresses ----------------------------------------------------------

def resolve(names: list[str]) -> dict[str, list[str]]:
    """Each name's addresses as this machine's resolver gives them ([] when it gives none)."""
    found = {}
    for name in names:
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            infos = []
        found[name] = list(dict.fromkeys(str(ipaddress.ip_address(i[4][0].split("%")[0])) for i in infos))
    return found


def parse_resolved(text: str, names: list[str]) -> dict[str, list[str]]:
    """The resolver unit's answer, as the daemon takes it: only names it asked about,
    only well-formed addresses."""
    try:
        data = json.loads(text)
    except ValueError:
        data = {}
    out: dict[str, list[str]] = {}
    for name in names:
        addrs = data.get(name) if isinstance(data, dict) else None
        good = []
        for a in addrs if isinstance(addrs, list) else []:
            try:
                if isinstance(a, str):
                    good.append(str(ipaddress.ip_address(a)))
            except ValueError:
                pass
        out[name] = good[:64]
    return out


def hosts_text(base: str, pinned: dict[str, list[str]]) -> str:
    """The server's /etc/hosts: the machine's own, then each content host's addresses."""
    lines = [base.rstrip("\n"), "# [ephemeral] content_hosts, as the appliance's daemon resolved them"]
    lines += [f"{addr} {name}" for name, addrs in pinned.items() for addr in addrs]
    return "\n".join(lines).lstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    """`python -m appliance.content resolve NAME...`: JSON of each name's addresses
    (run by the daemon in a unit of its own, which may use the network)."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "resolve":
        print("usage: python -m appliance.content resolve NAME...", file=sys.stderr)
        return 2
    try:
        names = [check_host(n) for n in args[1:]]
    except ValueError as e:
        print(f"content hosts: {e}", file=sys.stderr)
        return 2
    print(json.dumps(resolve(names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
