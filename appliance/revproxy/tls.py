"""Certificates with the openssl command (on every Debian and Arch system with
ca-certificates): a self-signed one for a first setup or a test, the expiry date
for `applctl proxy status`, and a check that a key belongs to its certificate."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from ..tools import tool
from .install import SetupError

TLS_DIR = Path("/etc/jupyterhub-appliance/tls")


def _openssl(*args: str, input: str | None = None) -> str:
    try:
        p = subprocess.run([tool("openssl"), *args], capture_output=True, text=True, timeout=60, input=input)
    except FileNotFoundError:
        raise SetupError("the openssl command is missing: install the openssl package") from None
    if p.returncode != 0:
        raise SetupError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"openssl {args[0]} failed")
    return p.stdout


def self_signed_paths(server_name: str) -> tuple[Path, Path]:
    return TLS_DIR / f"{server_name}.crt", TLS_DIR / f"{server_name}.key"


def make_self_signed(server_name: str, days: int = 825) -> tuple[Path, Path]:
    """A new key (0600) and certificate for server_name; browsers will warn until a
    real certificate replaces it."""
    cert, key = self_signed_paths(server_name)
    TLS_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    key.unlink(missing_ok=True)
    old = os.umask(0o077)  # the key is never readable by others, not even for a moment
    try:
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", str(days),
                 "-subj", f"/CN={server_name}", "-addext", f"subjectAltName=DNS:{server_name}",
                 "-keyout", str(key), "-out", str(cert))
    finally:
        os.umask(old)
    key.chmod(0o600)
    cert.chmod(0o644)
    return cert, key


def expiry(cert: Path) -> datetime | None:
    try:
        out = _openssl("x509", "-noout", "-enddate", "-in", str(cert))
    except SetupError:
        return None
    when = out.strip().split("=", 1)[-1]
    return datetime.strptime(when, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=timezone.utc)


def check_pair(cert: Path, key: Path) -> None:
    """The certificate parses, the key parses, and they belong together."""
    try:
        cert_pub = _openssl("x509", "-noout", "-pubkey", "-in", str(cert))
    except SetupError as e:
        raise SetupError(f"--cert {cert} is not a PEM certificate ({e})") from None
    try:
        key_pub = _openssl("pkey", "-pubout", "-in", str(key))
    except SetupError as e:
        raise SetupError(f"--key {key} is not a PEM private key without a passphrase ({e})") from None
    if cert_pub.strip() != key_pub.strip():
        raise SetupError(f"--key {key} does not belong to the certificate {cert}")
