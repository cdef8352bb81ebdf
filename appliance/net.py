"""URLs built from addresses: the one place that knows IPv6 literals need brackets.

`http://:::8000` is what an f-string makes of "::"; urllib, tornado and browsers
need `http://[::]:8000`. Everything that builds a URL from a configured address
(the hub's bind_url, the proxy's and applctl's URLs) goes through `http_url`.
"""

from __future__ import annotations


def url_host(address: str) -> str:
    """The host part of a URL for an address: IPv6 literals in brackets, others as they are."""
    if ":" in address and not address.startswith("["):
        return f"[{address}]"
    return address


def http_url(address: str, port: int, path: str = "") -> str:
    """http://HOST:PORT/path, with HOST bracketed when it is an IPv6 literal ("" stays empty:
    all addresses)."""
    return f"http://{url_host(address)}:{port}{path}"
