"""Who issued a token through `sudo applctl`, written at the end of its note: applctl
writes it (cli/token.py), the hub reads it to revoke tokens whose issuer lost the
role (hub/revoke.py)."""

from __future__ import annotations

import re

from . import users

# Appended by applctl to the note of every token issued under sudo, after the
# issuer's own --note: only the end of a note names the issuer (a name has no space
# or parenthesis, so free text before it cannot change whose it is).
_ISSUED = re.compile(r"issued by (" + users.NAME_RE.pattern + r") \(uid ([0-9]+)\) through sudo applctl\Z")


def issued_note(name: str, uid: int) -> str:
    return f"issued by {name} (uid {uid}) through sudo applctl"


def issuer_of(note: str | None) -> tuple[str, int] | None:
    """(name, uid) of who issued a token through sudo applctl, from the end of its note."""
    m = _ISSUED.search(note or "")
    return (m.group(1), int(m.group(2))) if m else None
