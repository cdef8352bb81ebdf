"""What the .deb leaves out, and that what it keeps is enough (issue 27, item 3:
the package was 143 MiB and unpacked to 577 MiB). scripts/stage-tree leaves out
what the running appliance never reads: the user environment's second copy of
JupyterHub's share/jupyterhub (a link to the hub's), the JavaScript packages'
sources, SVG icons and metadata the hub's pages never load, JupyterLab's second
copy of its static files (a link), the user environment's copies of the libraries
the hub's has at the same version (links), source maps, the packages' test suites
and JupyterLab's UI test framework. The system tests show the appliance still works
(test_1_core fetches every static file of the hub's pages; test_8_browser uses
JupyterLab and the hub's pages in a browser).

Byte-code is not shipped: postinst compiles it, as Debian's py3compile does, and
prerm deletes it (docs/benchmarks.md has the measurements behind that choice).
"""

from __future__ import annotations

import io
import posixpath
import re
import subprocess
import tarfile
from functools import cache

import debs
import pytest
from container import RELEASES

# On a booted Debian's tier: root and the built .deb (tests/system/booted.py).
pytestmark = pytest.mark.system

LIB = "usr/lib/jupyterhub-appliance"
MiB = 2**20
# The targets of issue 27; scripts/build-deb prints both beside them.
DEB_TARGET, UNPACKED_TARGET = 80 * MiB, 300 * MiB


@cache
def data_tar(release: str) -> bytes:
    return subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs.deb(release))], capture_output=True,
                          check=True).stdout


@cache
def members(release: str) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data_tar(release))) as tar:
        return {m.name.removeprefix("./"): m for m in tar.getmembers()}


@cache
def texts(release: str) -> dict[str, str]:
    """The hub's templates and CSS files, read in one pass over the package."""
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data_tar(release))) as tar:
        for m in tar:
            name = m.name.removeprefix("./")
            if m.isfile() and "/share/jupyterhub/" in name and name.endswith((".html", ".css")):
                f = tar.extractfile(m)
                assert f is not None, name
                found[name] = f.read().decode()
    return found


def read(release: str, name: str) -> str:
    return texts(release)[name]


@pytest.mark.parametrize("release", list(RELEASES))
def test_left_out_what_the_appliance_never_reads(release):
    names = [n for n in members(release) if n.startswith(LIB + "/")]
    assert len(names) > 5000, len(names)
    maps = [n for n in names if n.endswith(".map")]
    assert not maps, f"source maps: {maps[:5]}"
    test_dirs = [n for n in names if re.search(r"/site-packages/(?!jedi/third_party/).*/tests?/", n)]
    assert not test_dirs, f"test suites: {test_dirs[:5]}"
    assert not [n for n in names if "/jupyterlab/galata/" in n]
    assert not [n for n in names if "/fontawesome-free/svgs" in n or "/fontawesome-free/metadata/" in n]
    pycache = [n for n in names if "__pycache__" in n]
    assert not pycache, f"byte-code is compiled at install, not shipped: {pycache[:5]}"


@pytest.mark.parametrize("release", list(RELEASES))
def test_shared_files_are_shipped_once(release):
    m = members(release)
    hub_share = f"{LIB}/hub/share/jupyterhub"
    assert m[f"{hub_share}/templates/page.html"].isfile()
    link = m[f"{LIB}/user/share/jupyterhub"]
    assert link.issym() and link.linkname == "../../hub/share/jupyterhub", link
    assert not [n for n in m if n.startswith(f"{LIB}/user/share/jupyterhub/")]
    lab = [n for n in m if re.fullmatch(rf"{LIB}/user/lib/python3\.\d+/site-packages/jupyterlab/static", n)]
    assert len(lab) == 1 and m[lab[0]].issym(), lab
    assert m[f"{LIB}/user/share/jupyter/lab/static/index.html"].isfile()
    # The libraries both environments pin at the same version: the hub's, linked.
    for name in ("jupyterhub", "sqlalchemy", "cryptography", "tornado"):
        user = [n for n in m if re.fullmatch(rf"{LIB}/user/lib/python3\.\d+/site-packages/{name}", n)]
        assert len(user) == 1 and m[user[0]].issym(), (name, user)
        hub = posixpath.normpath(posixpath.join(posixpath.dirname(user[0]), m[user[0]].linkname))
        assert re.fullmatch(rf"{LIB}/hub/lib/python3\.\d+/site-packages/{name}", hub), hub
        assert m[hub + "/__init__.py"].isfile()
    # Nothing in the user environment links anywhere but into the hub's.
    for n, info in m.items():
        if n.startswith(f"{LIB}/user/") and info.issym() and not n.endswith("/bin/python3"):
            target = posixpath.normpath(posixpath.join(posixpath.dirname(n), info.linkname))
            assert target.startswith(f"{LIB}/"), (n, info.linkname)


@pytest.mark.parametrize("release", list(RELEASES))
def test_what_the_hubs_pages_load_is_kept(release):
    """Every static file the hub's templates name, and every file their CSS names."""
    m = members(release)
    static = f"{LIB}/hub/share/jupyterhub/static"
    templates = [n for n in m if n.startswith(f"{LIB}/hub/share/jupyterhub/templates/") and n.endswith(".html")]
    named = set()
    for t in templates:
        named |= set(re.findall(r"""static_url\(\s*["']([^"']+\.\w+)["']""", read(release, t)))
    # page.html's require.config paths (jquery, moment) and what requirejs loads.
    page = read(release, f"{LIB}/hub/share/jupyterhub/templates/page.html")
    named |= {p.removeprefix("../") + ".js" for p in re.findall(r"""['"](\.\./components/[^'"]+)['"]""", page)
              if "js-sha256" not in p}  # named by page.html but in no JupyterHub release
    assert "components/requirejs/require.js" in named and "components/moment/moment.js" in named, named
    missing = [n for n in named if f"{static}/{n}" not in m]
    assert not missing, missing
    for css in [n for n in m if n.startswith(static) and n.endswith(".css") and m[n].isfile()]:
        for ref in re.findall(r"""(?:url\(\s*['"]?|@import\s*['"])([^'")?#]+)""", read(release, css)):
            if ref.startswith(("data:", "http")):
                continue
            target = posixpath.normpath(posixpath.join(posixpath.dirname(css), ref))
            assert target in m, f"{css} names {ref}, which is not in the package"


@pytest.mark.parametrize("release", list(RELEASES))
def test_size_is_within_its_targets(release):
    deb = debs.deb(release)
    assert deb.stat().st_size <= DEB_TARGET, f"{deb.name}: {deb.stat().st_size / MiB:.1f} MiB"
    installed = int(subprocess.run(["dpkg-deb", "-f", str(deb), "Installed-Size"], capture_output=True, text=True,
                                   check=True).stdout) * 1024
    assert installed <= UNPACKED_TARGET, f"{deb.name}: unpacks to {installed / MiB:.0f} MiB"
