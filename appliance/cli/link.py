"""`applctl link`: a content link (nbgitpuller) that puts a git repository's files
into the person's home and opens them in JupyterLab; in ephemeral mode it lands a
new visitor straight in the workshop's notebook (docs/ephemeral.md, "Content links").

The link is https://HOST/hub/user-redirect/git-pull?repo=...&targetpath=...&urlpath=...:
JupyterHub sends the person (after login, or as a new visitor) to their own server's
/git-pull, where nbgitpuller clones the repository, or merges its news into the
copy already there without overwriting the person's edits, then opens urlpath.
"""

from __future__ import annotations

import re
import shutil
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import click

from .. import config, content
from ..net import http_url
from ..revproxy import setup_record
from .common import load_config
from .output import Failure, emit, example, json_option, note

GIT = "git"
INSTALL_GIT = "install git (Debian and Ubuntu: apt install git; Arch: pacman -S git)"
SCHEMES = ("https", "http", "git")
REPO_RULE = ("an https://, http:// or git:// URL of a git repository, with a host, no user or password, "
             "no whitespace or control characters, e.g. https://github.com/org/course.git")
BRANCH_RULE = "a branch or tag name: letters, digits and . _ / -, not starting with - or /, without .."
PATH_RULE = ("a path relative to the repository's top folder, e.g. notebooks/intro.ipynb: no leading /, "
             "no . or .. parts, no control characters")
_BRANCH_RE = re.compile(r"(?![-/])[A-Za-z0-9._/-]{1,255}")
_FOLDER_RE = re.compile(r"(?!\.)[A-Za-z0-9._-]{1,100}")


def _printable(text: str) -> bool:
    return not any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text)


def check_repo(url: Any) -> str:
    if not isinstance(url, str) or not 1 <= len(url) <= 2048 or not _printable(url):
        raise ValueError(REPO_RULE)
    try:
        u = urlsplit(url)
        u.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        raise ValueError(REPO_RULE) from None
    if u.scheme not in SCHEMES or not u.hostname or "@" in u.netloc or u.fragment:
        raise ValueError(REPO_RULE)
    return url


def check_branch(branch: Any) -> str:
    if (not isinstance(branch, str) or not _BRANCH_RE.fullmatch(branch) or ".." in branch
            or branch.endswith(("/", ".lock", ".")) or "//" in branch):
        raise ValueError(BRANCH_RULE)
    return branch


def check_path(path: Any) -> str:
    """What --open names inside the repository; spaces are fine, they are encoded."""
    if (not isinstance(path, str) or not 1 <= len(path) <= 1024 or path.startswith("/")
            or any(ord(c) < 32 or ord(c) == 127 for c in path) or "\\" in path):
        raise ValueError(PATH_RULE)
    parts = path.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(PATH_RULE)
    return "/".join(parts)


def folder_of(repo: str) -> str:
    """The folder the repository lands in, in the person's home: its last path part,
    without .git (the link names it as targetpath, so nbgitpuller does not keep .git)."""
    last = urlsplit(repo).path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    if not _FOLDER_RE.fullmatch(last):
        raise ValueError(f"the repository URL's last part ({last!r}) cannot name a folder: it must be letters, "
                         "digits and . _ -, not starting with a dot, e.g. https://github.com/org/course.git")
    return last


def make_link(base: str, repo: str, branch: str | None = None, open_path: str | None = None) -> str:
    """The content link, every part checked (ValueError saying what is accepted)."""
    repo = check_repo(repo)
    folder = folder_of(repo)
    query = {"repo": repo}
    if branch is not None:
        query["branch"] = check_branch(branch)
    query["targetpath"] = folder
    inside = f"{folder}/{check_path(open_path)}" if open_path is not None else folder
    query["urlpath"] = "lab/tree/" + quote(inside, safe="/")
    return f"{base.rstrip('/')}/hub/user-redirect/git-pull?{urlencode(query, safe='/:')}"


def git_missing() -> bool:
    """Whether servers would find no git: it is looked up on their PATH (nbgitpuller
    runs it there), not on applctl's own SAFE_PATH, and never run from here."""
    return shutil.which(GIT, path="/usr/local/bin:/usr/bin:/bin") is None


def public_base(cfg: config.Config) -> tuple[str, bool]:
    """(where people reach the hub, whether that is known): the name `applctl proxy
    setup` put TLS on, as `applctl sso setup` uses it; else HOST for the administrator
    to replace, on the hub's own port."""
    url, known = setup_record.public_url("")
    if known:
        return url, True
    return http_url("HOST", cfg["hub"]["port"]), False


@click.command("link")
@click.option("--repo", required=True, metavar="URL", help="the git repository (https://, http:// or git://)")
@click.option("--branch", metavar="B", help="its branch or tag (default: the repository's default branch)")
@click.option("--open", "open_path", metavar="PATH",
              help="what to open, relative to the repository's top folder (default: the folder)")
@json_option
@example("applctl link --repo https://github.com/org/course.git --open notebooks/intro.ipynb")
def link(repo: str, branch: str | None, open_path: str | None, as_json: bool) -> None:
    """Print a content link: it puts a git repository into the person's home and
    opens it in JupyterLab (nbgitpuller). A second click merges the repository's
    news and keeps the person's edits. In ephemeral mode a new visitor lands in it;
    their server must be allowed to reach the repository's host:
    [ephemeral] content_hosts.
    """
    cfg = load_config()
    base, known = public_base(cfg)
    for option, check, value in (("--repo", check_repo, repo), ("--repo", folder_of, repo),
                                 ("--branch", check_branch, branch), ("--open", check_path, open_path)):
        try:
            if value is not None:
                check(value)
        except ValueError as e:
            raise Failure(f"{option}: {e}") from None
    url = make_link(base, repo, branch, open_path)
    host = urlsplit(repo).hostname or ""
    eph = cfg["ephemeral"]
    unreachable = (cfg["hub"]["mode"] == "ephemeral" and eph["network"] != "internet"
                   and content.check_host(host) not in eph["content_hosts"])
    emit(as_json, {"link": url, "host_known": known, "git_installed": not git_missing(),
                   "visitors_reach_repo": not unreachable}, url)
    if as_json:
        return
    if not known:
        note("HOST: replace it with the name this machine is reached at (after applctl proxy setup, "
             "applctl link prints it)")
    if git_missing():
        note(f"git is not installed on this machine, and servers need it to fetch the repository: {INSTALL_GIT}")
    if unreachable:
        note(f"visitors' servers cannot reach {host}: add it to [ephemeral] content_hosts in appliance.toml, "
             "then applctl reload")

