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
serves on the port systemd holds for the server (serve_on_held_port), checks
what a content link asks nbgitpuller to do (guard_content_links), and gives
jupyter-server-proxy the administrator's web apps (with_apps).
"""

from __future__ import annotations

import asyncio
import gc
import json
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


# What the daemon passes: [apps.NAME] as it read them (appliance/daemon/units.py).
APPS_VARIABLE = "APPLIANCE_APPS"
# Runs an app that listens on {port} in a network of its own (appliance/app_bridge.py).
APP_BRIDGE = os.path.join(sys.prefix, "bin", "appliance-app")


def log(text: str) -> None:
    print(f"appliance-singleuser: {text}", file=sys.stderr, flush=True)


def _braces_kept(text: str) -> str:
    """A value jupyter-server-proxy fills in with str.format, where nothing is meant
    to be filled in: its braces stay braces."""
    return text.replace("{", "{{").replace("}", "}}")


def proxy_servers(apps: dict, port: int, path: str | None = None) -> dict:
    """c.ServerProxy.servers for the apps whose program is on this server's PATH
    (or at their absolute path); each other app is left out with one line in the log.

    Every app listens on a unix socket in a 0700 directory of the server's private
    /tmp (unix_socket: True). An app given {port} instead is started by the bridge,
    which runs it on `port` in a network namespace of its own and serves that on the
    unix socket."""
    servers = {}
    for name, app in apps.items():
        command = list(app["command"])
        program = shutil.which(command[0], path=path)
        if program is None:
            log(f"app {name} left off: its program {command[0]} is not installed (not found on the "
                "server's PATH); applctl apps list shows each app's state")
            continue
        command[0] = program
        if any("{port}" in arg for arg in command):
            command = [APP_BRIDGE, "--socket", "{unix_socket}", "--port", str(port), "--",
                       *(arg.replace("{port}", str(port)) for arg in command)]
        entry = {"title": app["title"], "enabled": True, "path_info": f"{name}/"}
        if app.get("icon"):
            entry["icon_path"] = app["icon"]
        servers[name] = {
            "command": command,
            "unix_socket": True,
            "timeout": app["timeout"],
            "environment": {k: _braces_kept(v) for k, v in app.get("environment", {}).items()},
            "launcher_entry": entry,
            "new_browser_tab": True,  # a whole app: a tab of its own, not a frame in JupyterLab
        }
    return servers


def with_apps(runtime_dir: str | None = None) -> None:
    """The administrator's [apps.NAME] as JupyterLab launcher entries: a Jupyter
    config file (ServerProxy.servers) in the server's own runtime directory, put first
    on JUPYTER_CONFIG_PATH. The variable itself goes: kernels need not see it."""
    text = os.environ.pop(APPS_VARIABLE, "")
    if not text:
        return
    try:
        given = json.loads(text)
        servers = proxy_servers(given["apps"], int(given["port"]))
    except (ValueError, KeyError, TypeError) as e:
        log(f"the apps the daemon passed cannot be read ({e}); the server starts without them")
        return
    runtime_dir = runtime_dir or os.environ.get("JUPYTER_RUNTIME_DIR") or ""
    if not servers or not os.path.isdir(runtime_dir):
        return
    config_dir = os.path.join(runtime_dir, "appliance-apps")
    os.makedirs(config_dir, mode=0o700, exist_ok=True)
    with open(os.path.join(config_dir, "jupyter_server_config.json"), "w") as f:
        json.dump({"ServerProxy": {"servers": servers}}, f)
    os.environ["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
        filter(None, [config_dir, os.environ.get("JUPYTER_CONFIG_PATH")]))


def main() -> int:
    gc.disable()
    without_yarn_config()
    serve_on_held_port()
    guard_content_links()
    with_apps()
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
