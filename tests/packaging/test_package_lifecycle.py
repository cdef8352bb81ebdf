"""Reinstall, an upgrade in place, remove and purge, on the session's appliance: after all
of tests/system when they share it (tests/conftest.py runs this tier after it), because
they take the appliance down; in a whole run, in the packaging lane's own container
(scripts/test). alice's server runs throughout, and the purge must keep her file.
The reinstall and the upgrade come from a signed apt repository (scripts/apt-repo),
served to the container on 127.0.0.1 and named with signed-by= as README says."""

from __future__ import annotations

import re
import threading
import time

import apt_repo
import pytest
import requests
from booted import USERS
from browser import Browser
from visitor_client import arrive

# On a booted Debian: root, systemd-nspawn and the built .deb (tests/system/booted.py).
pytestmark = pytest.mark.system


def byte_code(appliance) -> int:
    """How many .pyc files postinst compiled (the package ships none)."""
    return int(appliance.sh("find /usr/lib/jupyterhub-appliance -name '*.pyc' 2>/dev/null | wc -l").stdout)


@pytest.fixture(scope="module", autouse=True)
def alice_at_work(appliance):
    """alice's server running and a file in her home, as test_1_core leaves them;
    made here when this module has a container of its own."""
    if appliance.sh("systemctl is-active jupyter-alice.service", check=False).stdout.strip() != "active":
        appliance.sh("applctl adduser alice >/dev/null")
        b = Browser(appliance.url)
        b.login_and_start("alice", USERS["alice"])
        b.wait_for_server("alice")
    appliance.sh("runuser -u alice -- sh -c 'cd && test -e notes.txt || printf kept > notes.txt'")


@pytest.fixture(scope="module")
def repository(appliance, deb, tmp_path_factory):
    """This .deb in a signed repository, served; the container's apt told of it
    (the key, the sources line with signed-by=)."""
    with apt_repo.served([deb], tmp_path_factory.mktemp("apt")) as repo:
        repo.install_in(appliance.ct)
        yield repo
        appliance.sh(f"rm -f {apt_repo.SOURCES} {apt_repo.KEYRING}")


@pytest.fixture(scope="module")
def next_deb(deb, tmp_path_factory) -> object:
    """The next release: this package with a higher version (apt_repo.next_version)."""
    return apt_repo.next_version(deb, tmp_path_factory.mktemp("next"))


def test_reinstall_same_version_is_harmless(appliance, repository):
    # postinst compiled the byte-code of both environments: the hub's and a server's.
    assert byte_code(appliance) > 3000
    for module in ("hub/lib/python3*/site-packages/jupyterhub/app", "user/lib/python3*/site-packages/jupyterlab/labapp"):
        found = appliance.sh(f"ls /usr/lib/jupyterhub-appliance/{module.rsplit('/', 1)[0]}/__pycache__/"
                             f"{module.rsplit('/', 1)[1]}.cpython-3*.pyc", check=False)
        assert found.returncode == 0, module
    secret = appliance.sh("cat /var/lib/jupyterhub/jupyterhub_cookie_secret").stdout
    before = appliance.unit_props("jupyter-alice.service", "InvocationID")["InvocationID"]
    before_pyc = byte_code(appliance)
    repository.update_in(appliance.ct)
    got = appliance.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y --reinstall jupyterhub-appliance").stdout
    assert f"Get:1 {repository.url} trixie/main amd64 jupyterhub-appliance" in got, got
    # prerm deleted the byte-code, postinst compiled it again.
    assert byte_code(appliance) == before_pyc
    assert appliance.sh("cat /var/lib/jupyterhub/jupyterhub_cookie_secret").stdout == secret
    assert appliance.unit_props("jupyter-alice.service", "InvocationID")["InvocationID"] == before
    # The administrator's configuration (a conffile) is kept.
    assert f"port = {appliance.port}" in appliance.sh("cat /etc/jupyterhub/appliance.toml").stdout
    appliance.wait_hub()


def logs_in(url: str, name: str, password: str) -> bool:
    """One login as a browser makes it: the form, then the POST, answered with the
    hub's redirect onwards (not the form again, an error or no answer)."""
    b = Browser(url)
    try:
        page = b.get("/hub/login", timeout=30)
        xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text)
        r = b.s.post(url + "/hub/login?next=", data={"_xsrf": xsrf and xsrf.group(1), "username": name,
                                                      "password": password}, allow_redirects=False, timeout=30)
    except requests.RequestException:
        return False
    return r.status_code == 302 and "/hub/login" not in r.headers.get("Location", "")


def test_a_repository_signed_with_another_key_is_refused(appliance, repository, tmp_path):
    """A mirror, or a man in the middle, serving a tampered package (a stand-in of
    this name with a higher version) from a repository signed with a key of its own:
    apt refuses its indices (signed-by= names our key only), the version is not there
    to install, and nothing changes."""
    before = appliance.sh("dpkg-query -W -f '${Version}' jupyterhub-appliance").stdout
    newer = "9:9.9+deb13"
    with apt_repo.served([apt_repo.tiny_deb(tmp_path, newer)], tmp_path) as theirs:
        appliance.ct.write(apt_repo.SOURCES, repository.sources_line().replace(repository.url, theirs.url) + "\n")
        try:
            update = repository.update_in(appliance.ct, check=False)
            install = appliance.sh("DEBIAN_FRONTEND=noninteractive apt-get upgrade -y 2>&1; "
                                   f"apt-get install -y 'jupyterhub-appliance={newer}' 2>&1", check=False)
        finally:
            repository.install_in(appliance.ct)
    assert update.returncode != 0 and f"{theirs.url} trixie InRelease' is not signed" in update.stdout, update.stdout
    assert install.returncode != 0 and f"Version '{newer}' for 'jupyterhub-appliance' was not found" in install.stdout
    assert appliance.sh("dpkg-query -W -f '${Version}' jupyterhub-appliance").stdout == before
    assert newer not in appliance.sh("apt-cache policy jupyterhub-appliance").stdout


def test_an_upgrade_in_place_cuts_no_running_server_off(appliance, repository, next_deb):
    """`apt-get upgrade`, the next version published in the repository, with five
    servers running: none of them misses a request made through the proxy every
    100 ms; how long logins failed is printed."""
    names = [f"upg{i}" for i in range(5)]
    for n in names:
        appliance.sh(f"useradd -m {n} && echo {n}:pw-{n}-1 | chpasswd && applctl adduser {n} >/dev/null")
    users = {n: Browser(appliance.url) for n in names}
    for n, b in users.items():
        b.login_and_start(n, f"pw-{n}-1")
    for n, b in users.items():
        b.wait_for_server(n)
    units = {n: appliance.unit_props(f"jupyter-{n}.service", "InvocationID")["InvocationID"] for n in names}
    # The next version, published as a release would be; apt learns of it.
    repository.add(next_deb)
    repository.update_in(appliance.ct)
    misses: list[tuple[str, object]] = []
    asked = [0]
    logins: list[tuple[float, bool]] = []
    done = threading.Event()

    def ask(n: str, b: Browser) -> None:
        while not done.is_set():
            try:
                r = b.api_status(n)  # no redirects: one to the hub is a miss
                got: object = r.status_code if "json" in r.headers.get("Content-Type", "") else r.url
            except requests.RequestException as e:
                got = repr(e)
            asked[0] += 1
            if got != 200:
                misses.append((n, got))
            time.sleep(0.1)

    def log_in() -> None:
        while not done.is_set():
            logins.append((time.monotonic(), logs_in(appliance.url, "upg0", "pw-upg0-1")))
            time.sleep(0.2)

    threads = [threading.Thread(target=ask, args=item) for item in users.items()]
    threads.append(threading.Thread(target=log_in))
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        t0 = time.monotonic()
        upgraded = appliance.sh("DEBIAN_FRONTEND=noninteractive apt-get upgrade -y").stdout
        upgrade = time.monotonic() - t0
        appliance.wait_hub()
        time.sleep(1)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert f"Get:1 {repository.url} trixie/main amd64 jupyterhub-appliance" in upgraded, upgraded
    assert appliance.sh("dpkg-query -W -f '${Version}' jupyterhub-appliance").stdout.startswith("1:")
    assert {n: appliance.unit_props(f"jupyter-{n}.service", "InvocationID")["InvocationID"] for n in names} == units
    assert not misses and asked[0] > 50, f"{len(misses)} of {asked[0]} requests missed: {misses[:5]}"
    # The longest run of failed logins, from its first failure to the next success.
    worst, first_failure = 0.0, None
    for t, ok in logins:
        if not ok and first_failure is None:
            first_failure = t
        elif ok and first_failure is not None:
            worst, first_failure = max(worst, t - first_failure), None
    assert first_failure is None, "logins still fail after the upgrade"
    print(f"upgrade in place: {upgrade:.1f} s; {asked[0]} requests to 5 running servers, none missed; "
          f"{len(logins)} logins, {sum(not ok for _, ok in logins)} failed, the longest run of failures "
          f"{worst:.2f} s")


def test_remove_stops_services_and_keeps_data(appliance):
    # A visitor's server runs when the package goes: its home goes too (the daemon
    # that would delete it once the server stops is stopped first).
    appliance.ct.write("/etc/jupyterhub/appliance.toml", appliance.config_text('mode = "ephemeral"\n'))
    appliance.sh("applctl reload >/dev/null")
    appliance.wait_hub()
    _, visitor, _ = arrive(appliance)
    assert appliance.sh(f"test -d /var/lib/private/jupyter-{visitor}", check=False).returncode == 0
    appliance.sh("DEBIAN_FRONTEND=noninteractive apt-get remove -y jupyterhub-appliance")
    assert appliance.sh("ls -d /var/lib/private/jupyter-visitor-* /var/lib/jupyter-visitor-*",
                        check=False).stdout.strip() == ""
    assert appliance.sh(f"systemctl is-active jupyter-{visitor}.service", check=False).stdout.strip() != "active"
    for unit in ("jupyterhub.service", "jupyterhub-proxy.service", "jupyter-alice.service"):
        assert appliance.sh(f"systemctl is-active {unit}", check=False).stdout.strip() != "active", unit
    # The routes the proxy kept led to servers that are gone: a reinstall starts without them.
    assert appliance.sh("ls -d /run/jupyterhub-proxy /run/private/jupyterhub-proxy", check=False).stdout == ""
    # (visitors-served: ephemeral mode's count, if test_8_ephemeral ran; sso-groups.json:
    # the provider groups of single sign-on's last logins, if test_9_sso_accounts ran)
    assert set(appliance.sh("ls /var/lib/jupyterhub").stdout.split()) - {"visitors-served", "sso-groups.json"} == {
        "applctl_token", "jupyterhub.sqlite", "jupyterhub_cookie_secret"}
    assert appliance.sh("ls /var/lib/jupyterhub-appliance/secrets").stdout.split() == [
        "jupyterhub_crypt_key", "proxy_token"]
    assert appliance.sh("test -f /etc/jupyterhub/appliance.toml", check=False).returncode == 0
    # prerm deleted the byte-code postinst made: none is left (nor its directories,
    # which would keep dpkg from removing the package's).
    assert byte_code(appliance) == 0
    # Nor anything else in the package's tree (JupyterLab, run as root, once wrote a
    # page_config.json there: scripts/stage-tree), so dpkg removed the tree itself.
    assert appliance.sh("test -e /usr/lib/jupyterhub-appliance", check=False).returncode != 0, \
        appliance.sh("find /usr/lib/jupyterhub-appliance | head -20", check=False).stdout


def test_purge_removes_what_it_created_but_not_homes(appliance):
    appliance.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y jupyterhub-appliance")
    assert appliance.sh("test -e /var/lib/jupyterhub", check=False).returncode != 0
    assert appliance.sh("test -e /var/lib/jupyterhub-appliance/secrets", check=False).returncode != 0
    assert appliance.sh("test -e /etc/jupyterhub", check=False).returncode != 0
    for name in ("jupyterhub", "jupyterhub-users", "jupyterhub-admins"):
        assert appliance.sh(f"getent group {name}", check=False).returncode != 0, name
    assert appliance.sh("getent passwd jupyterhub", check=False).returncode != 0
    assert appliance.sh("cat /home/alice/notes.txt").stdout == "kept"
