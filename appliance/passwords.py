"""The appliance's own passwords (the reverse proxy's site password and ephemeral
mode's visitors' password): their rules, their bcrypt hash and its check, once.

The hash is written in the $2y$ form web servers know (nginx through libxcrypt,
Apache with its own); $2a$, $2b$ and $2y$ are the same algorithm."""

from __future__ import annotations

import bcrypt

MAX_BYTES = 72  # bcrypt ignores anything longer
MIN_CHARS = 8
ROUNDS = 10


class PasswordError(ValueError):
    pass


def check(password: str) -> str:
    if not password:
        raise PasswordError("the password is empty")
    if "\n" in password or "\r" in password:
        raise PasswordError("the password has a line break in it")
    if len(password.encode()) > MAX_BYTES:
        raise PasswordError(f"the password is longer than {MAX_BYTES} bytes (bcrypt's limit)")
    if len(password) < MIN_CHARS:
        raise PasswordError(f"the password is shorter than {MIN_CHARS} characters")
    return password


def hash_password(password: str) -> str:
    """A checked password's hash, in the $2y$ form."""
    hashed = bcrypt.hashpw(check(password).encode(), bcrypt.gensalt(rounds=ROUNDS)).decode()
    return f"$2y${hashed[4:]}"


def is_hash(text: str) -> bool:
    return text.startswith(("$2a$", "$2b$", "$2y$")) and len(text) == 60


def matches(given: str, hashed: str) -> bool:
    """Whether `given` is the password of `hashed` (a hash in any of the three forms).
    Slow on purpose (bcrypt): call it off an event loop."""
    data = given.encode()
    return 0 < len(data) <= MAX_BYTES and is_hash(hashed) and bcrypt.checkpw(data, b"$2b$" + hashed[4:].encode())
