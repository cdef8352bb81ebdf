"""The Arch package (packaging/arch, scripts/build-aur), as pacman would get it.

The package is built once per session with scripts/build-aur (a couple of minutes:
the two virtualenvs), or taken from APPLIANCE_ARCH_PKG. Without makepkg, shellcheck
(or root, for the install-script test) these tests skip, except in CI (CI set to anything, tests/ci.py),
where a missing tool is a failure.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import debs
import pytest

from tests.ci import in_ci

pytestmark = pytest.mark.arch

TOP = Path(__file__).resolve().parents[2]
ARCH = TOP / "packaging" / "arch"
PKGBUILD = ARCH / "PKGBUILD"
INSTALL = ARCH / "jupyterhub-appliance.install"
LIB = "usr/lib/jupyterhub-appliance"
IN_CI = in_ci()
ARCH_JOB = "arch-package"  # its build, in the background (debs.in_background)
DEBIAN_PACKAGES = "makepkg pacman-package-manager libarchive-tools fakeroot zstd shellcheck"


def require(what: str, ok: bool) -> None:
    """Skip when something the test needs is missing; in CI, fail instead."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{what}, and CI must run this test", pytrace=False)
    pytest.skip(what)


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    require(f"needs {', '.join(missing)} (Debian: apt-get install {DEBIAN_PACKAGES})", not missing)


def appliance_version() -> str:
    text = (TOP / "appliance" / "__init__.py").read_text()
    return re.search(r'^__version__ = "(.+)"$', text, re.M).group(1)


def kv_file(text: str) -> dict[str, list[str]]:
    """.PKGINFO / .BUILDINFO / .SRCINFO: `key = value` lines, keys repeat."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" = ")
            out.setdefault(key, []).append(value)
    return out


def decompressed(name: str, data: bytes) -> bytes:
    """The content of a compressed member as well, so a path cannot hide in it."""
    try:
        if name.endswith(".gz") or name == ".MTREE":
            return gzip.decompress(data)
        if name.endswith(".bz2"):
            return bz2.decompress(data)
        if name.endswith(".xz"):
            return lzma.decompress(data)
    except (OSError, EOFError, lzma.LZMAError):
        pass
    return b""


class Package:
    """The package's members; the content of those outside the venvs' lib/ trees."""

    def __init__(self, path: Path, tar_path: Path, build_log: str | None = None):
        self.path = path
        self.tar_path = tar_path
        self.build_log = build_log  # scripts/build-aur's stderr, when built here
        self.members: dict[str, tarfile.TarInfo] = {}
        self.data: dict[str, bytes] = {}
        for name, member, content in self.walk():
            self.members[name] = member
            if content is not None and not re.match(rf"{LIB}/(hub|user)/lib/", name):
                self.data[name] = content
        self.pkginfo = kv_file(self.data[".PKGINFO"].decode())
        self.buildinfo = kv_file(self.data[".BUILDINFO"].decode())

    def walk(self):
        """(name, TarInfo, content or None) for every member, read from the archive."""
        with tarfile.open(self.tar_path) as tf:
            for m in tf:
                yield m.name.rstrip("/"), m, (tf.extractfile(m).read() if m.isfile() else None)

    def files(self) -> set[str]:
        return {n for n, m in self.members.items() if m.isfile()}


def build() -> tuple[Path, str]:
    """scripts/build-aur, as a build user would run it: the package's path and the
    build's stderr. Started in the background at collection (tests/packaging/conftest.py)."""
    # The build user must reach the build directory: not under pytest's 0700 tmp.
    work = Path(tempfile.mkdtemp(prefix="appliance-arch-test-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    try:
        proc = subprocess.run(
            [str(TOP / "scripts" / "build-aur")],
            env=dict(os.environ, APPLIANCE_ARCH_BUILDDIR=str(work / "build")),
            capture_output=True, text=True, timeout=3600,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert proc.returncode == 0, f"scripts/build-aur failed:\n{proc.stderr[-6000:]}"
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.is_file(), f"scripts/build-aur printed {path}, which is not a file"
    return path, proc.stderr


def can_build() -> bool:
    return bool(shutil.which("makepkg") and shutil.which("fakeroot") and shutil.which("bsdtar")
                and shutil.which("pacman") and (os.geteuid() != 0 or shutil.which("runuser")))


@pytest.fixture(scope="session")
def package(tmp_path_factory) -> Package:
    given = os.environ.get("APPLIANCE_ARCH_PKG")
    build_log = None
    if given:
        path = Path(given)
        assert path.is_file(), f"APPLIANCE_ARCH_PKG={given} is not a file"
    else:
        require_tools("makepkg", "fakeroot", "bsdtar", "pacman")
        require("building as root needs runuser (util-linux)", os.geteuid() != 0 or shutil.which("runuser"))
        path, build_log = debs.in_background(ARCH_JOB, build).result()
    assert re.fullmatch(r"jupyterhub-appliance-.+-x86_64\.pkg\.tar\.(zst|gz)", path.name), path.name
    tar_path = path
    if path.name.endswith(".zst"):
        require_tools("zstd")
        tar_path = tmp_path_factory.mktemp("arch-pkg") / "package.tar"
        subprocess.run(["zstd", "-q", "-d", "-f", str(path), "-o", str(tar_path)], check=True)
    return Package(path, tar_path, build_log)


# --- what is in it ---------------------------------------------------------------


def test_file_list(package):
    names = set(package.members)
    units = sorted(p.name for p in (TOP / "units").iterdir() if p.suffix in (".service", ".socket", ".path", ".slice"))
    assert units, "no units in units/"
    expected = {f"usr/lib/systemd/system/{u}" for u in units} | {
        "usr/lib/sysusers.d/jupyterhub-appliance.conf",
        "usr/lib/tmpfiles.d/jupyterhub-appliance.conf",
        "usr/bin/applctl",
        "etc/jupyterhub/appliance.toml",
        "etc/jupyterhub/jupyterhub_config.py",
        "etc/jupyterhub/jupyterhub_config.d",
        "etc/pam.d/jupyterhub-appliance",
        "etc/sudoers.d/jupyterhub-appliance",
        f"{LIB}/hub/pyvenv.cfg",
        f"{LIB}/hub/bin/python",
        f"{LIB}/hub/bin/jupyterhub",
        f"{LIB}/hub/bin/applctl",
        f"{LIB}/user/pyvenv.cfg",
        f"{LIB}/user/bin/python",
        f"{LIB}/user/bin/jupyterhub-singleuser",
        f"{LIB}/user/bin/appliance-singleuser",
        f"{LIB}/user/bin/jupyter-lab",
        "usr/share/doc/jupyterhub-appliance/README.md",
        "usr/share/doc/jupyterhub-appliance/docs/index.md",  # the guide README links to
        "usr/share/doc/jupyterhub-appliance/docs/security.md",
        "usr/share/bash-completion/completions/applctl",
        "usr/share/zsh/site-functions/_applctl",
        ".PKGINFO", ".BUILDINFO", ".MTREE", ".INSTALL", ".CHANGELOG",
    }
    assert not expected - names, f"missing from the package: {sorted(expected - names)}"
    # Arch's paths: everything under /etc and /usr (no /lib, /bin, /sbin, /var), and
    # none of Debian's own places.
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {".PKGINFO", ".BUILDINFO", ".MTREE", ".INSTALL", ".CHANGELOG", "etc", "usr"}, tops
    debian = [n for n in names if n.startswith(("usr/sbin", "usr/local", "usr/lib/python3/", "etc/default",
                                                "usr/share/zsh/vendor-completions", "etc/pam.d/common-"))]
    assert not debian, f"Debian paths in the Arch package: {sorted(debian)[:20]}"
    # The daemon, the hub's configuration code: the appliance package in the hub venv.
    site = [n for n in names if re.fullmatch(rf"{LIB}/hub/lib/python3\.\d+/site-packages/appliance/daemon/server\.py", n)]
    assert site, "the appliance package is not in the hub virtualenv"


def test_units_and_configuration_are_the_repositorys(package):
    for unit in (TOP / "units").iterdir():
        if unit.suffix in (".service", ".socket", ".path", ".slice"):
            assert package.data[f"usr/lib/systemd/system/{unit.name}"] == unit.read_bytes(), unit.name
    for rel in ("sysusers.d/jupyterhub-appliance.conf", "tmpfiles.d/jupyterhub-appliance.conf"):
        assert package.data[f"usr/lib/{rel}"] == (TOP / "units" / rel).read_bytes(), rel
    # The hub reads no /etc/shadow (jupyterhub-pam does, as root): no shadow group for it.
    assert not any("shadow" in line for line in package.data["usr/lib/sysusers.d/jupyterhub-appliance.conf"]
                   .decode().splitlines() if not line.startswith("#"))
    for rel in ("jupyterhub/appliance.toml", "jupyterhub/jupyterhub_config.py", "sudoers.d/jupyterhub-appliance"):
        assert package.data[f"etc/{rel}"] == (TOP / "etc" / rel).read_bytes(), rel
    pam = package.data["etc/pam.d/jupyterhub-appliance"]
    assert pam == (ARCH / "pam.d" / "jupyterhub-appliance").read_bytes()
    assert b"include   system-auth" in pam and b"common-auth" not in pam.replace(b"# ", b"")
    assert package.data[".INSTALL"] == INSTALL.read_bytes()
    # What pacman -Qc shows: the release notes scripts/release writes.
    assert package.data[".CHANGELOG"] == (ARCH / "jupyterhub-appliance.changelog").read_bytes()


def test_applctl_is_the_hub_venvs(package):
    link = package.members["usr/bin/applctl"]
    # relative, as Debian's policy (lintian) asks of a link within /usr
    assert link.issym() and link.linkname == f"../lib/{LIB.split('/', 2)[-1]}/hub/bin/applctl"
    # sudo runs it as root: python isolated (-I), then appliance.cli.entry resets the
    # environment (scripts/stage-tree), not pip's plain console script.
    script = package.data[f"{LIB}/hub/bin/applctl"].decode()
    assert script.splitlines()[0] == f"#!/{LIB}/hub/bin/python -I", script
    assert "from appliance.cli.entry import main" in script


def test_ownership_and_modes(package):
    sudoers = package.members["etc/sudoers.d/jupyterhub-appliance"]
    assert sudoers.isfile()
    assert (sudoers.mode & 0o7777, sudoers.uid, sudoers.gid) == (0o440, 0, 0)
    not_root = [n for n, m in package.members.items() if (m.uid, m.gid) != (0, 0)]
    assert not not_root, f"not owned by root:root: {not_root[:10]}"
    writable = [n for n, m in package.members.items() if not m.issym() and m.mode & 0o022]
    assert not writable, f"group- or world-writable: {writable[:10]}"
    special = [n for n, m in package.members.items() if m.mode & 0o7000]
    assert not special, f"setuid, setgid or sticky: {special[:10]}"
    for unit in ("jupyterhub.service", "jupyterhub-appliance.socket"):
        assert package.members[f"usr/lib/systemd/system/{unit}"].mode & 0o7777 == 0o644


def test_backup_names_every_file_under_etc(package):
    backup = set(package.pkginfo.get("backup", []))
    etc_files = {n for n in package.files() if n.startswith("etc/")}
    assert etc_files, "no files under /etc"
    assert etc_files <= backup, f"not in backup=: {sorted(etc_files - backup)}"
    assert backup <= etc_files, f"backup= names files not in the package: {sorted(backup - etc_files)}"


def test_pkginfo(package):
    info = package.pkginfo
    assert info["pkgname"] == ["jupyterhub-appliance"]
    assert info["pkgver"] == [f"{appliance_version()}-1"]
    assert info["arch"] == ["x86_64"]
    depends = info["depend"]
    # libbpf: systemd needs it at runtime to enforce SocketBindAllow=/Deny= of servers' units.
    for dep in ("nodejs", "configurable-http-proxy", "sudo", "systemd", "pam", "shadow", "libbpf"):
        assert dep in depends, f"{dep} not in depends: {depends}"
    # python is pinned to the minor version the virtualenvs were built with.
    (libdir,) = {m.group(1) for n in package.members
                 if (m := re.fullmatch(rf"{LIB}/hub/lib/python(3\.\d+)", n))}
    major, minor = libdir.split(".")
    assert "python" not in depends
    assert f"python>={libdir}" in depends and f"python<{major}.{int(minor) + 1}" in depends, depends
    assert any(n == f"{LIB}/user/lib/python{libdir}" for n in package.members), "the two venvs differ in python"


def test_venvs_use_the_system_python_at_their_installed_path(package):
    for venv in ("hub", "user"):
        cfg = package.data[f"{LIB}/{venv}/pyvenv.cfg"].decode()
        assert re.search(r"^home = /usr/bin$", cfg, re.M), cfg
        assert f"-m venv /{LIB}/{venv}" in cfg, cfg
        py3 = package.members[f"{LIB}/{venv}/bin/python3"]
        assert py3.issym() and py3.linkname == "/usr/bin/python3", py3.linkname
        for script in ("jupyterhub",) if venv == "hub" else ("jupyter-lab", "jupyterhub-singleuser", "appliance-singleuser"):
            first = package.data[f"{LIB}/{venv}/bin/{script}"].split(b"\n", 1)[0]
            assert first == f"#!/{LIB}/{venv}/bin/python3".encode(), (script, first)
        pycs = [n for n in package.files() if n.startswith(f"{LIB}/{venv}/lib/") and n.endswith(".pyc")]
        assert len(pycs) > 100, f"{venv}: byte-code not compiled at build time"


def test_no_build_path_inside(package):
    builddir = package.buildinfo["builddir"][0]
    startdir = package.buildinfo["startdir"][0]
    assert builddir.startswith("/") and len(builddir) > 1, builddir
    needles = {builddir.encode(), startdir.encode(), f"{builddir}/src".encode(), f"{builddir}/pkg".encode()}
    if not os.environ.get("APPLIANCE_ARCH_PKG"):
        needles.add(str(TOP).encode())  # built from this checkout
    hits, scanned = [], 0
    for name, member, content in package.walk():  # every file, binary or not
        if name == ".BUILDINFO":
            continue  # makepkg records where it built; checked below
        blobs = [name.encode(), member.linkname.encode()]
        if content is not None:
            blobs += [content, decompressed(name, content)]
            scanned += 1
        if any(needle in blob for needle in needles for blob in blobs):
            hits.append(name)
    assert scanned == len(package.files()) - 1
    assert not hits, f"build paths {sorted(n.decode() for n in needles)} in: {hits[:20]}"
    # .BUILDINFO names the build directory only where makepkg always does.
    for line in package.data[".BUILDINFO"].decode().splitlines():
        if any(needle.decode() in line for needle in needles):
            assert line.startswith(("builddir = ", "startdir = ")), line


def test_license_is_installed_where_arch_looks(package):
    lic = "usr/share/licenses/jupyterhub-appliance/LICENSE"
    assert lic in package.members, "no /usr/share/licenses/jupyterhub-appliance/LICENSE"
    assert package.data[lic] == (TOP / "LICENSE").read_bytes()
    assert package.members[lic].mode & 0o7777 == 0o644
    assert package.pkginfo["license"] == ["BSD-3-Clause"]
    assert package.data[lic].startswith(b"BSD 3-Clause License")


def test_package_function_used_no_network(package):
    """The AUR's rule: sources are downloaded by makepkg, package() installs from them."""
    require("APPLIANCE_ARCH_PKG names a package built elsewhere: no build log to read", package.build_log is not None)
    require("package() runs without network only when built as root (unshare --net)", os.geteuid() == 0)
    assert "package() ran without network (unshare --net)" in package.build_log, package.build_log[-3000:]


# --- what namcap would say ---------------------------------------------------------------
# namcap (Arch's package linter) is not in Debian's archive: its checks that matter
# for this package, as assertions.


def test_files_only_in_arch_directories(package):
    # namcap: "File in a non-standard directory", /usr/sbin (a link to /usr/bin on Arch),
    # /usr/local, /usr/lib64.
    usr = {n.split("/")[1] for n in package.members if n.startswith("usr/") and n.count("/") >= 1}
    assert usr <= {"bin", "lib", "share"}, sorted(usr)
    share = {n.split("/")[2] for n in package.members if n.startswith("usr/share/") and n.count("/") >= 2}
    assert share <= {"doc", "licenses", "bash-completion", "zsh"}, sorted(share)
    parents = {n.rsplit("/", 1)[0] for n in package.members if "/" in n}
    empty_dirs = sorted(n for n, m in package.members.items() if m.isdir() and n not in parents)
    # namcap: "Directory is empty". The drop-in directory is meant to be; python -m
    # venv makes include/python3.N (for building extensions against the venv).
    allowed = re.compile(rf"etc/jupyterhub/jupyterhub_config\.d|{LIB}/(hub|user)/include/python3\.\d+")
    assert [d for d in empty_dirs if not allowed.fullmatch(d)] == [], empty_dirs
    assert "etc/jupyterhub/jupyterhub_config.d" in empty_dirs


def test_byte_code_matches_its_installed_source(package):
    """Each .pyc names its source by the installed path and is fresh for the file pacman installs.

    A .pyc that names the build path shows it in tracebacks; one that is stale for its
    source (mtime or size, or a hash) is ignored and, /usr being read-only to users,
    recompiled in memory on every start.
    """
    sources = {n: m for n, m in package.members.items() if n.endswith(".py")}
    source_hash: dict[str, bytes] = {}  # the siphash python checks hash-based .pyc with
    pycs: dict[str, tuple[bytes, str, bool]] = {}  # name -> (header, source, names it)
    for name, _member, data in package.walk():
        if name.endswith(".pyc"):
            m = re.fullmatch(r"(.*)/__pycache__/([^/]+)\.cpython-3\d+(\.opt-\d)?\.pyc", name)
            assert m, f"byte-code outside __pycache__: {name}"
            src = f"{m.group(1)}/{m.group(2)}.py"
            pycs[name] = (data[:16], src, f"/{src}".encode() in data)
        elif name.endswith(".py") and data is not None:
            source_hash[name] = importlib.util.source_hash(data)
    assert len(pycs) > 1000, len(pycs)
    orphans, wrong_path, stale = [], [], []
    for name, (data, src, names_it) in pycs.items():
        if src not in sources:
            orphans.append(name)
            continue
        if not names_it:
            wrong_path.append(name)
        flags = int.from_bytes(data[4:8], "little")
        if flags == 0:  # timestamp: the source's mtime and size as pacman installs it
            mtime, size = int.from_bytes(data[8:12], "little"), int.from_bytes(data[12:16], "little")
            if (mtime, size) != (int(sources[src].mtime) & 0xFFFFFFFF, sources[src].size & 0xFFFFFFFF):
                stale.append(name)
        elif flags & 0b10 and data[:4] == importlib.util.MAGIC_NUMBER:  # checked hash
            if data[8:16] != source_hash[src]:
                stale.append(name)
    assert not orphans, f"byte-code without its source: {orphans[:10]}"
    assert not wrong_path, f"byte-code naming another path than its installed source: {wrong_path[:10]}"
    assert not stale, f"byte-code stale for its installed source: {len(stale)}, e.g. {stale[:5]}"


def elf_needed(data: bytes) -> list[str] | None:
    """DT_NEEDED of an ELF file (None if not ELF), from its section headers."""
    if data[:4] != b"\x7fELF":
        return None
    wide = data[4] == 2  # ELFCLASS64
    assert data[5] == 1, "big-endian ELF"
    u = lambda off, n: int.from_bytes(data[off:off + n], "little")  # noqa: E731
    if wide:
        shoff, shentsize, shnum = u(0x28, 8), u(0x3A, 2), u(0x3C, 2)
    else:
        shoff, shentsize, shnum = u(0x20, 4), u(0x2E, 2), u(0x30, 2)
    sections = []
    for i in range(shnum):
        h = shoff + i * shentsize
        if wide:
            sections.append((u(h + 4, 4), u(h + 24, 8), u(h + 32, 8), u(h + 40, 4)))
        else:
            sections.append((u(h + 4, 4), u(h + 16, 4), u(h + 20, 4), u(h + 24, 4)))
    needed = []
    for sh_type, offset, size, link in sections:
        if sh_type != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[link][1]
        step = 16 if wide else 8
        for e in range(offset, offset + size, step):
            tag, val = u(e, step // 2), u(e + step // 2, step // 2)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", strtab + val)
                needed.append(data[strtab + val:end].decode())
    return needed


# Which Arch package has a shared library (the sonames seen in this package so far).
ARCH_SONAMES = {
    "glibc": {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1",
              "ld-linux-x86-64.so.2", "libresolv.so.2"},
    "gcc-libs": {"libgcc_s.so.1", "libstdc++.so.6", "libgomp.so.1", "libatomic.so.1"},
    "openssl": {"libssl.so.3", "libcrypto.so.3"},
    "zlib": {"libz.so.1"},
    "pam": {"libpam.so.0"},
}


def test_depends_has_what_the_libraries_link_to(package):
    """namcap's link-level dependency check: every shared library a bundled ELF file
    needs is in the package (a wheel's .libs) or comes with a package in depends=."""
    depends = {re.split(r"[<>=]", d)[0] for d in package.pkginfo["depend"]}
    owner = {so: pkg for pkg, sos in ARCH_SONAMES.items() for so in sos}
    inside = {n.rsplit("/", 1)[-1] for n in package.members}
    elves, thirty_two, unknown, undeclared = 0, [], {}, {}
    for name, _member, data in package.walk():
        if data is None or (needed := elf_needed(data)) is None:
            continue
        elves += 1
        if data[4] != 2:
            thirty_two.append(name)
        for so in needed:
            if so in inside:
                continue
            if so not in owner:
                unknown.setdefault(so, name)
            elif owner[so] not in depends:
                undeclared.setdefault(owner[so], f"{so} ({name})")
    assert elves > 20, f"only {elves} ELF files: is the scan broken?"
    assert not thirty_two, f"32-bit ELF files in an x86_64 package: {thirty_two}"
    assert not unknown, f"linked to libraries of no known Arch package (add to ARCH_SONAMES and depends=): {unknown}"
    assert not undeclared, f"depends= misses: {undeclared}"


# --- the PKGBUILD and the install script as files ------------------------------------------


@pytest.mark.parametrize("path", [PKGBUILD, INSTALL, TOP / "scripts" / "build-aur"], ids=lambda p: p.name)
def test_bash_syntax(path):
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "path, args",
    [
        # As AUR tooling does: pkgname & co. look unused, srcdir/pkgdir unassigned.
        (PKGBUILD, ["-s", "bash", "-e", "SC2034,SC2154,SC2164"]),
        (INSTALL, ["-s", "bash"]),
        (TOP / "scripts" / "build-aur", []),
    ],
    ids=["PKGBUILD", "install", "build-aur"],
)
def test_shellcheck(path, args):
    require_tools("shellcheck")
    proc = subprocess.run(["shellcheck", *args, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def makepkg_in_copy(files: list[Path], *args: str, srcdest: Path | None = None,
                    timeout: int = 120) -> subprocess.CompletedProcess:
    """makepkg ARGS, with Arch's makepkg.conf, in a fresh directory holding copies of
    FILES (a PKGBUILD and what it names); as root, as the user nobody (makepkg refuses root)."""
    require_tools("makepkg")
    user = None
    if os.geteuid() == 0:
        require("running makepkg as root's substitute needs runuser and the user nobody",
                bool(shutil.which("runuser")) and subprocess.run(["id", "nobody"], capture_output=True).returncode == 0)
        user = "nobody"
    work = Path(tempfile.mkdtemp(prefix="appliance-makepkg-", dir="/var/tmp"))
    try:
        for f in (*files, ARCH / "makepkg.conf"):
            shutil.copy(f, work / f.name)
            os.chmod(work / f.name, 0o644)
        os.chmod(work, 0o755)
        if user:  # makepkg wants to be able to write where it is, even to print .SRCINFO
            shutil.chown(work, user)
        # HOME: no user's makepkg.conf gets in.
        env = ["HOME=/nonexistent", *([f"SRCDEST={srcdest}"] if srcdest else [])]
        cmd = ["env", *env, "makepkg", "--config", str(work / "makepkg.conf"), *args]
        if user:
            cmd = ["runuser", "-u", user, "--", *cmd]
        return subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_srcinfo_is_generated_from_the_pkgbuild():
    proc = makepkg_in_copy([PKGBUILD, INSTALL, ARCH / "jupyterhub-appliance.changelog"], "--printsrcinfo")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("pkgname = jupyterhub-appliance") == 1
    assert (ARCH / ".SRCINFO").read_text() == proc.stdout, "packaging/arch/.SRCINFO is stale: run scripts/build-aur --srcinfo"
    info = kv_file(proc.stdout)
    assert info["pkgver"] == [appliance_version()], "PKGBUILD's pkgver is not appliance.__version__"


# --- the install script and /etc/shadow, on an Arch-like /etc -----------------------------
# This version leaves /etc/shadow alone; 0.2.0 and older let a group shadow with the
# hub in it read it, and installing this version puts back what was there before.

ARCH_ETC = {
    # Arch: no shadow group, /etc/shadow root:root 0600.
    "passwd": "root:x:0:0::/root:/bin/bash\nnobody:x:65534:65534:Kernel Overflow User:/:/usr/bin/nologin\n",
    "group": "root:x:0:root\nnobody:x:65534:\n",
    "gshadow": "root:::root\nnobody:!*::\n",
    "shadow": "root:$6$salt$hash:19000::::::\nnobody:!*:19000::::::\n",
}

SCENARIO = r"""
set -eu
# A private mount namespace (unshare -m): /etc is a copy with Arch's account files,
# /var/lib and the sysusers.d/tmpfiles.d directories are empty tmpfs with the package's files.
stage=$1 pkgfiles=$2 install=$3 step=$4
mount -t tmpfs tmpfs "$stage"
cp -a /etc/. "$stage/"
for f in passwd group gshadow shadow; do cp "$pkgfiles/etc-$f" "$stage/$f"; done
chown 0:0 "$stage/passwd" "$stage/group" "$stage/shadow" "$stage/gshadow"
chmod 0644 "$stage/passwd" "$stage/group"; chmod 0600 "$stage/shadow" "$stage/gshadow"
printf 'passwd: files\ngroup: files\nshadow: files\ngshadow: files\n' > "$stage/nsswitch.conf"
mount --bind "$stage" /etc
mount -t tmpfs tmpfs /var/lib
for d in sysusers.d tmpfiles.d; do
  mount -t tmpfs tmpfs "/usr/lib/$d"
  cp "$pkgfiles/$d"/* "/usr/lib/$d/"
done
mount -t tmpfs tmpfs /run
remove_files() {  # what pacman does between pre_remove and post_remove
  rm -f /usr/lib/sysusers.d/* /usr/lib/tmpfiles.d/*
}
report() {
  echo "STATE $1 $(stat -c '%U:%G:%a' /etc/shadow) group=$(getent group shadow | cut -d: -f1,4) record=$(test -f /var/lib/jupyterhub-appliance/shadow-permissions && echo yes || echo no)"
}
old_install() {  # what 0.2.0's install left: a group shadow it made, with the hub in it, reading /etc/shadow
  systemd-sysusers jupyterhub-appliance.conf
  groupadd -r shadow; gpasswd -a jupyterhub shadow >/dev/null
  mkdir -p /var/lib/jupyterhub-appliance
  printf 'owner=0\ngroup=0\nmode=600\ngroup_shadow_existed=%s\n' "$1" > /var/lib/jupyterhub-appliance/shadow-permissions
  chgrp shadow /etc/shadow; chmod 0640 /etc/shadow
}
. "$install"
set +eu  # pacman runs install scripts without -e or -u
report before
case $step in
  fresh)
    post_install; report installed
    post_upgrade 0.2.1-2 0.2.1-1; report upgraded
    pre_remove 0.2.1-2; remove_files; post_remove 0.2.1-2; report removed ;;
  from-0.2.0)
    old_install no; report old
    post_upgrade 0.2.1-1 0.2.0-1; report upgraded ;;
  preexisting)
    # The administrator had made a shadow group that reads /etc/shadow before 0.2.0.
    groupadd -r shadow; chgrp shadow /etc/shadow; chmod 0640 /etc/shadow
    systemd-sysusers jupyterhub-appliance.conf; gpasswd -a jupyterhub shadow >/dev/null; report old
    post_upgrade 0.2.1-1 0.2.0-1; report upgraded ;;
  changed)
    # Someone changed /etc/shadow after 0.2.0 set it: the upgrade leaves it alone.
    old_install no; chgrp root /etc/shadow; chmod 0400 /etc/shadow; report changed
    post_upgrade 0.2.1-1 0.2.0-1; report upgraded ;;
esac
"""


def run_install_scenario(package, step: str) -> tuple[dict[str, str], str]:
    require("the install-script test needs root (a private mount namespace with an Arch-like /etc)",
            os.geteuid() == 0)
    require_tools("unshare", "systemd-sysusers", "systemd-tmpfiles", "gpasswd", "groupdel", "groupadd")
    work = Path(tempfile.mkdtemp(prefix="appliance-install-test-"))
    try:
        files = work / "files"
        for d in ("sysusers.d", "tmpfiles.d"):
            (files / d).mkdir(parents=True)
            for name, data in package.data.items():
                if name.startswith(f"usr/lib/{d}/"):
                    (files / d / Path(name).name).write_bytes(data)
        for f, text in ARCH_ETC.items():
            (files / f"etc-{f}").write_text(text)
        (work / "install").write_bytes(package.data[".INSTALL"])
        (work / "stage").mkdir()
        (work / "scenario.sh").write_text(SCENARIO)
        proc = subprocess.run(
            # pacman runs install scripts with /bin/sh, which is bash in POSIX mode on Arch.
            ["unshare", "--mount", "--propagation", "private", "bash", "--posix", str(work / "scenario.sh"),
             str(work / "stage"), str(files), str(work / "install"), step],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    states = dict(line.split(" ", 2)[1:] for line in proc.stdout.splitlines() if line.startswith("STATE "))
    return states, proc.stdout


def test_install_leaves_shadow_alone(package):
    states, out = run_install_scenario(package, "fresh")
    assert states["before"] == "root:root:600 group= record=no"
    assert states["installed"] == states["upgraded"] == states["removed"] == states["before"], out
    assert "/etc/shadow" not in out, out


def test_upgrade_from_0_2_0_puts_shadow_back_and_removes_the_group_it_made(package):
    states, out = run_install_scenario(package, "from-0.2.0")
    assert states["old"] == "root:shadow:640 group=shadow:jupyterhub record=yes"
    assert states["upgraded"] == "root:root:600 group= record=no", out
    assert "no longer in group shadow" in out and "/etc/shadow is back to root:root 600" in out
    assert "removed group shadow, which the package had created" in out


def test_upgrade_keeps_a_shadow_group_it_did_not_make(package):
    states, out = run_install_scenario(package, "preexisting")
    assert states["old"] == "root:shadow:640 group=shadow:jupyterhub record=no"
    assert states["upgraded"] == "root:shadow:640 group=shadow: record=no", out


def test_upgrade_leaves_a_shadow_changed_since_alone(package):
    states, out = run_install_scenario(package, "changed")
    assert states["changed"] == "root:root:400 group=shadow:jupyterhub record=yes"
    assert states["upgraded"].startswith("root:root:400 "), out
    assert "was changed since the package set it" in out
