"""A signed apt repository of given .debs, made with scripts/apt-repo and served over
HTTP on 127.0.0.1 for the containers (they share the host's network):

    with apt_repo.served([deb], tmp_path) as repo:
        repo.install_in(machine)          # the key and the sources line, as README says
        machine.run("apt-get update && apt-get install -y jupyterhub-appliance")
        repo.add(next_deb)                # a later release, into the same repository

The signing key is a throwaway one, made in a GNUPGHOME of its own beside the
repository, never inside the directory the server publishes.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
KEY_FILE = "jupyterhub-appliance.asc"
KEYRING = f"/usr/share/keyrings/{KEY_FILE}"  # where README puts the key
SOURCES = "/etc/apt/sources.list.d/jupyterhub-appliance.list"


def signing_key(gnupghome: Path, name: str = "jupyterhub-appliance test") -> str:
    """A new key without a passphrase in GNUPGHOME (made if absent); its fingerprint."""
    gnupghome.mkdir(mode=0o700, parents=True, exist_ok=True)
    gpg = ["gpg", "--homedir", str(gnupghome), "--batch"]
    subprocess.run([*gpg, "--passphrase", "", "--quick-gen-key", f"{name} <test@example.invalid>",
                    "default", "sign", "never"], check=True, capture_output=True)
    out = subprocess.run([*gpg, "--with-colons", "--list-secret-keys", name], check=True,
                         capture_output=True, text=True).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


def next_version(deb: Path, dest: Path) -> Path:
    """This package as the next release: the same files with a higher version, an
    epoch (higher than any, as a real next release is; "+next" alone on 0.2.0 would
    still be below 0.2.1~, which prerm takes for a return to 0.2.0 and its self-bound
    ports) and "+next" (pool file names carry no epoch: the repository would take
    1:0.2.0+deb13 for a changed 0.2.0+deb13), ahead of the release suffix. Uncompressed:
    quicker to make than to squeeze."""
    tree = dest / "next-tree"
    subprocess.run(["rm", "-rf", str(tree)], check=True)
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    version = re.search(r"^Version: (.*)$", control.read_text(), re.M)[1]
    upstream, release = re.fullmatch(r"(.*)(\+deb\d+)", version).groups()
    control.write_text(control.read_text().replace(f"Version: {version}\n", f"Version: 1:{upstream}+next{release}\n"))
    out = dest / f"jupyterhub-appliance_{upstream}+next{release}_amd64.deb"
    subprocess.run(["dpkg-deb", "-Znone", "-b", str(tree), str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", str(tree)], check=True)
    return out


def tiny_deb(dest: Path, version: str, name: str = "jupyterhub-appliance") -> Path:
    """A .deb of nothing but its control file, for the tests of the repository's
    bookkeeping (scripts/apt-repo, scripts/release) that need no real package."""
    tree = dest / f"tiny-{version}"
    (tree / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (tree / "DEBIAN" / "control").write_text(f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n"
                                             "Section: misc\nPriority: optional\nMaintainer: Test <test@example.invalid>\n"
                                             "Description: a stand-in\n")
    out = dest / f"{name}_{version.split(':')[-1]}_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(out)], check=True, stdout=subprocess.DEVNULL)
    return out


def forget_key(gnupghome: Path) -> None:
    """Stop the gpg-agent that signing started for this GNUPGHOME (only that one)."""
    subprocess.run(["gpgconf", "--homedir", str(gnupghome), "--kill", "gpg-agent"], capture_output=True)


def add(repo: Path, gnupghome: Path, fpr: str, *debs: Path) -> None:
    proc = subprocess.run([str(TOP / "scripts" / "apt-repo"), str(repo), "--gnupghome", str(gnupghome),
                           "--key", fpr, *map(str, debs)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serving(directory: Path) -> Iterator[str]:
    """DIR over HTTP on 127.0.0.1, a free port; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, name="apt-repo-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Served:
    url: str
    dir: Path  # what the server publishes
    gnupghome: Path  # the private key: outside `dir`
    fpr: str

    @property
    def key(self) -> Path:
        """The armored public key, for signed-by=."""
        return self.dir / KEY_FILE

    def sources_line(self, suite: str = "trixie") -> str:
        return f"deb [signed-by={KEYRING}] {self.url} {suite} main"

    def add(self, *debs: Path) -> None:
        add(self.dir, self.gnupghome, self.fpr, *debs)

    def update_in(self, machine, check: bool = True):
        """apt-get update of this repository's source only (Debian's own lists are
        left as the container's base has them: no other package moves)."""
        return machine.run(f"apt-get update -o Dir::Etc::sourcelist={SOURCES} -o Dir::Etc::sourceparts=- "
                           "-o APT::Get::List-Cleanup=0 2>&1", check=check)

    def install_in(self, machine, suite: str = "trixie") -> None:
        """README's two steps in a container (Machine): the key, the sources line."""
        machine.write(KEYRING, self.key.read_text())
        machine.write(SOURCES, self.sources_line(suite) + "\n")


@contextlib.contextmanager
def served(debs: list[Path], tmp: Path) -> Iterator[Served]:
    """A repository of `debs` signed with a new key, served; everything in `tmp`."""
    gnupghome = tmp / "gnupg"
    fpr = signing_key(gnupghome)
    try:
        repo = tmp / "repo"
        add(repo, gnupghome, fpr, *debs)
        with serving(repo) as url:
            yield Served(url, repo, gnupghome, fpr)
    finally:
        forget_key(gnupghome)
