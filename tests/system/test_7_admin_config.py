"""What a jupyterhub-admin may not put into appliance.toml (issue 26, items 1, 2 and 8),
on the booted appliance.

ada is a jupyterhub-admin: she may `sudo applctl`. She tries to show anonymous
visitors the host through ephemeral.shared_dir (/proc/1/root, /home, /etc, a link
to them, a folder she could swap for such a link), to switch hub.mode, and to set
a daemon.min_uid above the people or an environment variable that loads code or
sets a proxy. Each attempt fails in one line that names the key, and the file
stays byte for byte as it was; root's own directory is accepted.
"""

from __future__ import annotations

import pytest

PASSWORD = "admin-config-7"
CONFIG = "/etc/jupyterhub/appliance.toml"
ADMIN = "ada"
ACCEPTED = ("accepted under sudo: an existing directory outside /proc, /sys, /dev, /run, /home, /root, /etc and "
            "/var/lib, owned by root and writable only by root")


@pytest.fixture(scope="module", autouse=True)
def app(appliance):
    saved = appliance.sh(f"cat {CONFIG}").stdout
    appliance.sh(f"id {ADMIN} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {ADMIN}")
    appliance.sh("chpasswd", input=f"{ADMIN}:{PASSWORD}\n")
    appliance.sh(f"applctl adduser --admin {ADMIN}")
    appliance.sh(
        "set -e; rm -rf /srv/t7; mkdir -p /srv/t7/workshop /srv/t7/theirs /srv/t7/open /srv/t7/hers/inner; "
        "chmod 0755 /srv/t7 /srv/t7/workshop /srv/t7/hers/inner; echo lesson > /srv/t7/workshop/README.txt; "
        f"chown {ADMIN}: /srv/t7/theirs /srv/t7/hers; chmod 0777 /srv/t7/open; "
        "ln -s /etc /srv/t7/to-etc; ln -s /proc/1/root /srv/t7/to-host; ln -s /home /srv/t7/to-home; "
        "ln -s /srv/t7/workshop /srv/t7/current")
    yield appliance
    appliance.ct.write(CONFIG, saved)
    appliance.sh(f"applctl deluser {ADMIN}; rm -rf /srv/t7", check=False)


def as_admin(app, args: str):
    """sudo applctl ARGS as the jupyterhub-admin; never a traceback."""
    r = app.sh(f"sudo -S -p '' applctl {args}", user=ADMIN, input=f"{PASSWORD}\n", check=False)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


def errors(r) -> list[str]:
    """stderr without sudo's warning about the container's hostname."""
    return [line for line in r.stderr.splitlines() if "unable to resolve host" not in line]


def checksum(app) -> str:
    return app.sh(f"sha256sum {CONFIG}").stdout


def refused(app, args: str, as_root: bool = False) -> str:
    """The one line of a refusal that left the file as it was."""
    before = checksum(app)
    r = app.sh(f"applctl {args}", check=False) if as_root else as_admin(app, args)
    lines = errors(r)
    assert r.returncode == 1 and r.stdout == "" and len(lines) == 1, (args, r.returncode, r.stdout, r.stderr)
    assert lines[0].startswith("applctl: ") and lines[0].endswith("; the file is unchanged"), lines
    assert checksum(app) == before, args
    return lines[0]


@pytest.mark.parametrize("path, why", [
    ("/proc/1/root", "it is inside /proc"),
    ("/proc", "it is /proc"),
    ("/sys/firmware", "it is inside /sys"),
    ("/dev", "it is /dev"),
    ("/run/user", "it is inside /run"),
    ("/home", "it is /home"),
    ("/home/ada", "it is inside /home"),
    ("/root", "it is /root"),
    ("/etc", "it is /etc"),
    ("/var/lib/jupyterhub", "it is inside /var/lib"),
    ("/var", "it holds /var/lib"),
    ("/srv/t7/to-etc", "it leads to /etc"),
    ("/srv/t7/to-home", "it leads to /home"),
    ("/srv/t7/to-host", ("it leads to /, which holds /proc", "it cannot be resolved")),  # the whole host
    ("/srv/t7/absent", "it does not exist"),
    ("/srv/t7/workshop/README.txt", "it is not a directory"),
    ("/srv/t7/theirs", "it is owned by uid"),
    ("/srv/t7/open", "it is writable by others (mode 0777)"),
    ("/srv/t7/hers/inner", "/srv/t7/hers above it is owned by uid"),
])
def test_an_admin_cannot_show_visitors_what_they_must_not_see(app, path, why):
    line = refused(app, f"config set ephemeral.shared_dir {path}")
    assert line.startswith(f"applctl: ephemeral.shared_dir = '{path}' is not accepted: "), line
    assert any(w in line for w in ((why,) if isinstance(why, str) else why)), line
    assert ACCEPTED in line, line


def test_an_admin_may_name_roots_own_directory_and_unset_it(app):
    for path in ("/srv/t7/workshop", "/srv/t7/current"):  # a link root made to it, too
        r = as_admin(app, f"config set ephemeral.shared_dir {path}")
        assert r.returncode == 0, r.stderr
        assert app.sh("applctl config get ephemeral.shared_dir").stdout == f"{path}\n"
    assert as_admin(app, "config unset ephemeral.shared_dir").returncode == 0
    assert app.sh("applctl config get ephemeral.shared_dir").stdout.strip() == ""  # "": none


def test_root_may_name_any_folder(app):
    assert app.sh("applctl config set ephemeral.shared_dir /srv/t7/open", check=False).returncode == 0
    app.sh("applctl config unset ephemeral.shared_dir")


def test_an_admin_cannot_switch_hub_mode(app):
    assert refused(app, "config set hub.mode ephemeral") == (
        "applctl: hub.mode decides who gets a server: people with an account, or anyone who opens the hub's "
        "address, with no login, so only root may change it (a root login, not sudo applctl); it stays "
        "'accounts'; the file is unchanged")


def test_an_admin_cannot_switch_back_either(app):
    saved = app.sh(f"cat {CONFIG}").stdout
    app.ct.write(CONFIG, saved.replace("[hub]\n", '[hub]\nmode = "ephemeral"\n', 1))  # as root left it
    try:
        for args in ("config set hub.mode accounts", "config unset hub.mode"):
            assert "it stays 'ephemeral'; the file is unchanged" in refused(app, args)
    finally:
        app.ct.write(CONFIG, saved)


@pytest.mark.parametrize("as_root", [False, True])
@pytest.mark.parametrize("uid", [61184, 65534])
def test_min_uid_above_the_people_is_refused(app, as_root, uid):
    line = refused(app, f"config set daemon.min_uid {uid}", as_root=as_root)
    assert f"daemon.min_uid = {uid} is not accepted: an integer from 1 to 60000 (UID_MAX of login.defs)" in line


@pytest.mark.parametrize("as_root", [False, True])
@pytest.mark.parametrize("name", ["https_proxy", "PIP_INDEX_URL", "XDG_CONFIG_HOME", "PS4"])
def test_environment_names_that_load_code_or_set_a_proxy_are_refused(app, as_root, name):
    line = refused(app, f"config set spawner.environment.{name} http://evil.example/", as_root=as_root)
    assert f"spawner.environment.{name} = 'http://evil.example/' is not accepted: a name that loads no code " \
           "or configuration and sets no proxy" in line, line
