"""ExecStart of every user's server: jupyterhub-singleuser, started without cyclic
garbage collection until it serves.

This file runs in the user environment, not the hub's: scripts/stage-tree installs
it there as bin/appliance-singleuser. So it imports nothing but the standard
library and that environment's jupyterhub.

Why: a server's start is mostly imports (Jupyter Server, JupyterLab, SQLAlchemy
through jupyterhub.singleuser), which make long-lived objects, and the collections
they trigger cost about a seventh of that CPU time on Debian 12's Python 3.11
(measured: 1.22 s against 1.05 s). With 20 servers starting at once on two cores,
that CPU is the wait.

It also keeps JupyterLab from running Node.js at every start (without_yarn_config),
serves on the port systemd holds for the server (serve_on_held_port), and checks
what a content link asks nbgitpuller to do (guard_content_links).
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import socket
import sys
import threading
from urllib.parse import urlsplit

# If the server never ran this loop (a future Jupyter Server making its own), turn
# collection on anyway rather than run without it for the server's life.
FALLBACK_SECONDS = 300


def collect_from_now_on() -> None:
    if not gc.isenabled():
        gc.freeze()  # what the start made lives as long as the server: out of later collections
        gc.enable()


def without_yarn_config() -> None:
    """JupyterLab's labapp, when imported, runs `node yarn.js config --json` to learn
    the npm registry (get_app_version builds an _AppHandler, whose registry default
    asks yarn). Node.js is on PATH here, for the proxy, so every server start paid
    for it: 0.55 s of CPU on Debian 12, a quarter of a start.

    A server never uses that registry. It serves building JupyterLab and installing
    extensions from npm, and this JupyterLab is root's, read-only to the server.
    So the server gets what JupyterLab itself uses where Node.js is missing: an
    empty yarn configuration. `jupyter labextension`, run by a person, still asks yarn.
    """
    try:
        import jupyterlab.commands as lab
    except ImportError:
        return  # an environment without JupyterLab
    if hasattr(lab, "_yarn_config"):
        lab._yarn_config = lambda logger=None: {"yarn config": {}, "npm config": {}}


# The first file descriptor systemd passes (sd_listen_fds(3)).
LISTEN_FDS_START = 3


def serve_on_held_port() -> None:
    """Serve on the listening socket systemd passed (jupyter-NAME.socket, see
    appliance/daemon/units.py), never binding a port: Jupyter Server would bind its
    port, close it to see it free, and bind it again, and a local account could take
    it in between. The unit's SocketBindDeny= refuses any bind anyway.

    Jupyter Server has no option for an inherited socket, so its two methods that
    find and bind the port are replaced for this process."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return  # started without its socket unit (an older daemon): binds its own port
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for kernels and terminals
    held = socket.socket(fileno=LISTEN_FDS_START)
    held.set_inheritable(False)
    held.setblocking(False)
    from jupyter_server.serverapp import ServerApp

    def find_port(app: ServerApp) -> None:
        app.port = held.getsockname()[1]

    def bind(app: ServerApp) -> bool:
        app.http_server.add_sockets([held])
        return True

    ServerApp._find_http_port = find_port
    ServerApp._bind_http_server_tcp = bind


CONTENT_SCHEMES = ("https", "http", "git")
NO_GIT = ("git is not installed on this machine, so this link cannot fetch its repository: ask the person who "
          "runs it to install git (Debian and Ubuntu: apt install git; Arch: pacman -S git)")


def content_link_refusal(repo: str, targetpath: str | None, git_found: bool = True) -> str | None:
    """Why a content link (nbgitpuller's /git-pull) is refused, or None. Anyone can send
    a person a link, and nbgitpuller clones wherever targetpath says: into
    ~/.ipython/profile_default/startup or a site-packages folder, the next kernel
    would run the sender's code. So only a folder of the home, not hidden, and only
    a repository over https, http or git (no file:// nor a remote helper)."""
    if not git_found:
        return NO_GIT
    try:
        scheme, host = urlsplit(repo).scheme, urlsplit(repo).hostname
    except ValueError:
        scheme, host = "", None
    if scheme not in CONTENT_SCHEMES or not host or any(c.isspace() or ord(c) < 32 for c in repo):
        return f"repo must be an https://, http:// or git:// URL of a git repository, not {repo[:200]!r}"
    if targetpath is not None:
        parts = targetpath.split("/")
        if (targetpath.startswith("/") or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
                or "\\" in targetpath or any(ord(c) < 32 for c in targetpath)):
            return (f"targetpath must be a folder in your home, with no leading /, no .. and no hidden "
                    f"(.name) parts, not {targetpath[:200]!r}")
    return None


def guard_content_links() -> None:
    """nbgitpuller's page and its clone both check content_link_refusal first, and
    answer 400 with the reason (installed when its extension loads, so a server
    that never loads it pays nothing)."""
    try:
        import nbgitpuller
    except ImportError:
        return
    load = nbgitpuller._load_jupyter_server_extension

    def checked(get):
        async def get_checked(self, *args, **kwargs):
            from tornado import web

            targetpath = self.get_argument("targetpath", None) or self.get_argument("targetPath", None)
            why = content_link_refusal(self.get_argument("repo", ""), targetpath, shutil.which("git") is not None)
            if why:
                raise web.HTTPError(400, "%s", why)
            result = get(self, *args, **kwargs)  # None when tornado's @authenticated redirected
            return await result if result is not None else None
        return get_checked

    def load_checked(app):
        load(app)
        from nbgitpuller import handlers

        for handler in (handlers.UIHandler, handlers.SyncHandler):
            handler.get = checked(handler.get)

    nbgitpuller._load_jupyter_server_extension = load_checked


def main() -> int:
    gc.disable()
    without_yarn_config()
    serve_on_held_port()
    guard_content_links()
    # Jupyter Server runs on the current asyncio loop (tornado's IOLoop.current()),
    # and starts it only once it listens: the first thing that loop runs marks the
    # end of the start.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.call_soon(collect_from_now_on)
    fallback = threading.Timer(FALLBACK_SECONDS, collect_from_now_on)
    fallback.daemon = True
    fallback.start()
    from jupyterhub.singleuser import main as singleuser

    sys.argv[0] = "jupyterhub-singleuser"  # what its help and logs call it
    return singleuser()


if __name__ == "__main__":
    sys.exit(main())
