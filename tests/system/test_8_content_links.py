"""Content links (nbgitpuller) in ephemeral mode, on the booted appliance: a git
repository served over HTTP inside the machine (`git http-backend` behind a small
WSGI server, as root, in a transient unit) on a loopback address of its own, named
in /etc/hosts like a real git server. A new visitor who follows the link `applctl
link` prints lands in JupyterLab with the repository's notebook open (chromium), and
a second click brings the repository's news without overwriting their edit.

The visitors' network is "none" (127.0.0.1 only) plus [ephemeral] content_hosts:
git.workshop.test (127.0.0.2) is reachable from a visitor's server, by the name the
daemon pinned in its /etc/hosts; other.workshop.test (127.0.0.3), serving the same
repository and answering root, is not: a link to it fetches nothing.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.register_assert_rewrite("real_browser")
from booted import HUB_PY, free_port  # noqa: E402
from playwright.sync_api import expect  # noqa: E402
from visitor_client import arrive, ready_pool  # noqa: E402

pytest_plugins = ["real_browser"]  # the chromium and page fixtures, the screenshot on failure

GIT_HOST, GIT_ADDR = "git.workshop.test", "127.0.0.2"
OTHER_HOST, OTHER_ADDR = "other.workshop.test", "127.0.0.3"
PORT = free_port()
WORK, SERVED = "/srv/content-work", "/srv/content-git"
EDIT = "my own note, kept"

# `git http-backend` as WSGI: the request's CGI variables in, its CGI reply out.
GIT_SERVER = """
import subprocess, sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

def app(environ, start_response):
    env = {k: v for k, v in environ.items() if isinstance(v, str)}
    env.update(GIT_PROJECT_ROOT=sys.argv[3], GIT_HTTP_EXPORT_ALL="1", PATH="/usr/bin:/bin")
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
    sep = b"\\r\\n\\r\\n" if b"\\r\\n\\r\\n" in out else b"\\n\\n"
    head, _, rest = out.partition(sep)
    status, headers = "200 OK", []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = value.strip()
        elif name:
            headers.append((name, value.strip()))
    start_response(status, headers)
    return [rest]

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

make_server(sys.argv[1], int(sys.argv[2]), app, handler_class=Quiet).serve_forever()
"""


def notebook(*cells: tuple[str, str]) -> str:
    return json.dumps({"cells": [{"cell_type": kind, "metadata": {}, "source": [text],
                                  **({"execution_count": None, "outputs": []} if kind == "code" else {})}
                                 for kind, text in cells],
                       "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                   "name": "python3"}},
                       "nbformat": 4, "nbformat_minor": 4}, indent=1) + "\n"


def commit(app, message: str) -> None:
    app.sh(f"cd {WORK} && git add -A && git -c user.name=Teacher -c user.email=t@workshop.test commit -qm "
           f"'{message}' && git push -q {SERVED}/course.git main")


@pytest.fixture(scope="module")
def workshop(appliance):
    app = appliance
    if app.sh("command -v git", check=False).returncode != 0:  # git is only Suggested by the .deb
        app.sh("apt-get install -y -q git >/dev/null", timeout=300)
    app.sh(f"rm -rf {WORK} {SERVED} && mkdir -p {SERVED} && git init -q -b main {WORK}")
    app.ct.write(f"{WORK}/intro.ipynb", notebook(("markdown", "# Lesson one"), ("code", "print(6 * 7)")))
    app.sh(f"cd {WORK} && git add -A && git -c user.name=Teacher -c user.email=t@workshop.test commit -qm one "
           f"&& git clone -q --bare {WORK} {SERVED}/course.git")
    app.ct.write("/srv/git-server.py", GIT_SERVER)
    app.sh(f"grep -q {GIT_HOST} /etc/hosts || printf '{GIT_ADDR} {GIT_HOST}\\n{OTHER_ADDR} {OTHER_HOST}\\n' "
           ">> /etc/hosts")
    for i, addr in enumerate((GIT_ADDR, OTHER_ADDR)):
        app.sh(f"systemctl stop content-git{i} 2>/dev/null; systemd-run -q --unit=content-git{i} "
               f"{HUB_PY} /srv/git-server.py {addr} {PORT} {SERVED}")
    for host in (GIT_HOST, OTHER_HOST):  # both serve the repository to root, outside any sandbox
        app.ct.wait_for(f"git ls-remote http://{host}:{PORT}/course.git")
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text(
        f'mode = "ephemeral"\n[ephemeral]\nwarm_pool = 1\nnetwork = "none"\ncontent_hosts = ["{GIT_HOST}"]\n'))
    app.sh("applctl reload")
    app.wait_hub()
    yield app
    app.sh("systemctl stop content-git0 content-git1", check=False)
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text())
    app.sh("applctl reload", check=False)


def content_link(app, repo: str, open_path: str) -> str:
    """What `applctl link` prints, its HOST placeholder made this appliance's address."""
    r = app.sh(f"applctl link --repo {repo} --open {open_path}")
    assert "HOST: replace it" in r.stderr, r.stderr
    return r.stdout.strip().replace(f"http://HOST:{app.port}", app.url)


def test_a_new_visitor_lands_in_the_notebook_and_a_second_click_keeps_their_edit(workshop, page):
    app = workshop
    link = content_link(app, f"http://{GIT_HOST}:{PORT}/course.git", "intro.ipynb")
    assert "/hub/user-redirect/git-pull?" in link and "urlpath=lab/tree/course/intro.ipynb" in link
    ready_pool(app)  # the visitor is handed the warm pool's server: the link's target must survive that
    page.goto(link)
    page.wait_for_url(re.compile(r"/user/visitor-[a-z0-9]{10}/lab/tree/course/intro\.ipynb"))
    name = re.search(r"/user/(visitor-[a-z0-9]{10})/", page.url).group(1)
    tab = page.locator(".jp-NotebookPanel:visible")
    expect(tab.get_by_role("heading", name="Lesson one")).to_be_visible()  # the markdown, rendered
    expect(page.locator(".lm-TabBar-tab.lm-mod-current").get_by_text("intro.ipynb").first).to_be_visible()

    # The visitor writes in the notebook and saves it, as a person does.
    tab.locator(".jp-Cell").last.locator(".cm-content").click()
    page.keyboard.press("End")
    page.keyboard.type(f"  # {EDIT}")
    page.keyboard.press("Control+s")
    contents = f"{app.url}/user/{name}/api/contents/course"

    def saved(path: str) -> str:
        r = page.request.get(f"{contents}/{path}?content=1&format=text&type=file")
        return r.text() if r.ok else ""
    for _ in range(60):
        if EDIT in saved("intro.ipynb"):
            break
        page.wait_for_timeout(500)
    assert EDIT in saved("intro.ipynb")

    # The teacher changes the same notebook and adds another; the visitor clicks again.
    app.ct.write(f"{WORK}/intro.ipynb", notebook(("markdown", "# Lesson one, revised"), ("code", "print(6 * 7)")))
    app.ct.write(f"{WORK}/lesson2.ipynb", notebook(("markdown", "# Lesson two")))
    commit(app, "two")
    page.goto(link)
    page.wait_for_url(re.compile(rf"/user/{name}/lab/tree/course/intro\.ipynb"))
    expect(page.locator(".jp-NotebookPanel:visible").get_by_text(EDIT).first).to_be_visible()
    assert EDIT in saved("intro.ipynb")  # nbgitpuller merged: the visitor's edit wins over the teacher's
    assert "Lesson two" in saved("lesson2.ipynb")  # and the news came
    app.sh(f"applctl stop {name}")


# Run in a visitor's kernel. A refused address drops the packets: git waits, so the
# three run at once, each until a timeout.
REACH = f"""
import json, socket, subprocess
from concurrent.futures import ThreadPoolExecutor
def ls_remote(host):
    try:
        r = subprocess.run(["git", "ls-remote", f"http://{{host}}:{PORT}/course.git"], capture_output=True,
                           text=True, timeout=15)
        return "fetched" if r.returncode == 0 and "refs/heads/main" in r.stdout else r.stderr.strip()[-200:]
    except subprocess.TimeoutExpired:
        return "timed out"
def address(host):
    try:
        return socket.gethostbyname(host)
    except OSError as e:
        return type(e).__name__
hosts = ["{GIT_HOST}", "{OTHER_HOST}", "{OTHER_ADDR}"]
with ThreadPoolExecutor(3) as pool:
    fetched = dict(zip(hosts, pool.map(ls_remote, hosts)))
print(json.dumps({{"fetch": fetched, "address": address("{GIT_HOST}"),
                  "pinned": "{GIT_HOST}" in open("/etc/hosts").read().split("content_hosts")[-1]}}))
"""


def test_a_visitor_fetches_from_a_content_host_and_from_no_other(workshop):
    app = workshop
    b, name, _ = arrive(app)
    # Browser.execute runs its own asyncio loop: not in the thread of Playwright's.
    with ThreadPoolExecutor(1) as pool:
        got = json.loads(pool.submit(b.execute, name, b.start_kernel(name), REACH, 90).result())
    print(f"\nfrom a visitor's server: {got}")
    assert got["fetch"][GIT_HOST] == "fetched", got
    assert got["address"] == GIT_ADDR and got["pinned"] is True, got  # the name the daemon resolved
    # The same repository, which root fetches from (the fixture), by name or by address: refused.
    assert got["fetch"][OTHER_HOST] != "fetched" and got["fetch"][OTHER_ADDR] != "fetched", got
    allow = app.unit_props(f"jupyter-{name}.service", "IPAddressAllow")["IPAddressAllow"]
    assert GIT_ADDR in allow and OTHER_ADDR not in allow, allow
    # A crafted link that would clone into a folder whose code a kernel runs at start:
    # the server refuses it, page and clone alike, and says why.
    query = f"repo=http://{GIT_HOST}:{PORT}/course.git&targetpath=.ipython/profile_default/startup"
    for path in ("git-pull", "git-pull/api"):
        r = b.get(f"/user/{name}/{path}?{query}")
        assert r.status_code == 400 and "targetpath must be a folder in your home" in r.text, (r.status_code, r.text)
    startup = f"/var/lib/private/jupyter-{name}/.ipython/profile_default/startup"  # the kernel made it, README
    listed = app.sh(f"ls -A {startup}", check=False).stdout.split()
    assert "intro.ipynb" not in listed and ".git" not in listed, listed
    app.sh(f"applctl stop {name}")
