"""`sudo applctl` as a jupyterhub-admin runs nothing of the caller's and reads no file
for them that they may not read (issue 26, items 3 and 4), on the booted appliance.

mallory is a jupyterhub-admin: she may run `sudo /usr/bin/applctl` and nothing else.
She plants /home/mallory/bin/systemctl and journalctl, a sitecustomize.py on PYTHONPATH, a
PYTHONSTARTUP file with PYTHONINSPECT, and a PYTHONHOME; each would leave a marker in
/root (only root can write there) if it ever ran as root. The machine's /etc/sudoers
is made as weak as it can be (no secure_path, no env_reset, the PYTHON* variables
not deleted), first with the shipped drop-in and then with its Defaults line removed
too: applctl's own reset must hold alone. /etc/sudoers and the drop-in are restored
when the module ends.
"""

from __future__ import annotations

import json
import shlex

import pytest

PASSWORD = "mallory-pass-7"
DROPIN = "/etc/sudoers.d/jupyterhub-appliance"
CONTROL = "/etc/sudoers.d/zz-test-sudo-path"
MARKERS = "/root/sudo-path-markers"
HOSTILE = ("PATH=/home/mallory/bin:$PATH PYTHONPATH=/home/mallory/py PYTHONSTARTUP=/home/mallory/startup.py PYTHONINSPECT=1 "
           "PYTHONHOME=/home/mallory/pyhome PYTHONUSERBASE=/home/mallory/ub")


@pytest.fixture(scope="module")
def app(appliance):
    app = appliance
    app.sh("id mallory >/dev/null 2>&1 || useradd --create-home --shell /bin/bash mallory")
    app.sh("usermod -aG jupyterhub-users,jupyterhub-admins mallory")
    app.sh("chpasswd", input=f"mallory:{PASSWORD}\n")
    app.sh(f"cp -p /etc/sudoers /root/sudoers.saved && cp -p {DROPIN} /root/dropin.saved")
    app.sh(f"rm -rf {MARKERS} && mkdir -m 0700 {MARKERS}")
    # What she plants: each leaves a marker only root can write, and exits 0 so the
    # command would look as if it worked.
    plant = {"systemctl": "#!/bin/sh\ntouch {m}/systemctl\nexit 0\n",
             "journalctl": "#!/bin/sh\ntouch {m}/journalctl\nexit 0\n",
             "python3": "#!/bin/sh\ntouch {m}/python3\nexit 0\n"}
    app.sh("mkdir -p /home/mallory/bin /home/mallory/py /home/mallory/pyhome/lib /home/mallory/ub", user="mallory")
    for name, text in plant.items():
        app.sh(f"cat > /home/mallory/bin/{name} && chmod 0755 /home/mallory/bin/{name}", user="mallory", input=text.format(m=MARKERS))
    app.sh("cat > /home/mallory/py/sitecustomize.py", user="mallory",
           input=f"open('{MARKERS}/sitecustomize', 'w').close()\n")
    app.sh("cat > /home/mallory/py/click.py", user="mallory", input=f"open('{MARKERS}/click', 'w').close()\n")
    app.sh("cat > /home/mallory/startup.py", user="mallory", input=f"open('{MARKERS}/startup', 'w').close()\n")
    # The weakest /etc/sudoers: no secure_path, no env_reset, PYTHON* not deleted.
    app.sh("sed -i '/secure_path/d; s/^Defaults\\s\\+env_reset.*/Defaults !env_reset/' /etc/sudoers")
    app.sh("echo 'Defaults env_delete -= \"PYTHONPATH PYTHONHOME PYTHONINSPECT PYTHONUSERBASE PYTHONSTARTUP\"'"
           " >> /etc/sudoers")
    # A control: the same sudo lets her environment through to another command.
    app.sh(f"echo 'mallory ALL=(root) NOPASSWD: /usr/bin/env' > {CONTROL} && chmod 0440 {CONTROL}")
    app.sh("visudo -c")
    yield app
    app.sh(f"cp -p /root/sudoers.saved /etc/sudoers && cp -p /root/dropin.saved {DROPIN} && rm -f {CONTROL}")
    app.sh("visudo -c")
    app.sh(f"rm -rf {MARKERS}")
    app.sh("applctl deluser mallory", check=False)


def markers(app) -> list[str]:
    return app.sh(f"ls -A {MARKERS}").stdout.split()


def as_mallory(app, args: str, env: str = HOSTILE):
    r = app.sh(f"{env} sudo -S -p '' applctl {args}", user="mallory", input=f"{PASSWORD}\n", check=False)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    # sudo's own warning: the container's hostname does not resolve (TESTING.md).
    r.stderr = "".join(line for line in r.stderr.splitlines(keepends=True)
                       if not line.startswith("sudo: unable to resolve host"))
    return r


def test_the_sudo_of_this_test_is_weak_indeed(app):
    """Without this the rest could pass for the wrong reason."""
    env = app.sh(f"{HOSTILE} sudo -n /usr/bin/env", user="mallory").stdout
    assert "PATH=/home/mallory/bin:" in env and "PYTHONPATH=/home/mallory/py" in env, env
    assert "PYTHONINSPECT=1" in env and "PYTHONSTARTUP=/home/mallory/startup.py" in env
    which = app.sh(f"{HOSTILE} sudo -n /usr/bin/env sh -c 'command -v systemctl'", user="mallory").stdout
    assert which.strip() == "/home/mallory/bin/systemctl"
    assert markers(app) == []


def test_the_installed_applctl_runs_python_isolated(app):
    first = app.sh("head -n 1 /usr/bin/applctl").stdout.strip()
    assert first == "#!/usr/lib/jupyterhub-appliance/hub/bin/python -I"
    assert "from appliance.cli.entry import main" in app.sh("cat /usr/bin/applctl").stdout
    assert app.sh(f"visudo -cf {DROPIN}").returncode == 0
    assert 'Defaults!/usr/bin/applctl env_reset, secure_path="/usr/sbin:/usr/bin:/sbin:/bin"' in \
        app.sh(f"cat {DROPIN}").stdout


@pytest.mark.parametrize("dropin", ["shipped", "without its Defaults line"])
def test_planted_helpers_and_python_variables_never_run_as_root(app, dropin):
    if dropin != "shipped":
        app.sh(f"sed -i '/^Defaults/d' {DROPIN} && visudo -c")
        assert "Defaults" not in app.sh(f"grep -v '^#' {DROPIN}").stdout
    try:
        r = as_mallory(app, "status")
        assert r.returncode == 0 and "problem" not in r.stdout, (r.stdout, r.stderr)
        data = json.loads(as_mallory(app, "status --json").stdout)
        assert data["problems"] == [] and data["units"]["jupyterhub.service"] == "active", data
        r = as_mallory(app, "logs --unit hub -n 20")
        assert r.returncode == 0 and "JupyterHub" in r.stdout, (r.stdout, r.stderr)
        assert as_mallory(app, "doctor").returncode in (0, 1)  # runs visudo and test: by full path too
        assert markers(app) == [], "a planted program or Python file ran as root"
    finally:
        app.sh(f"cp -p /root/dropin.saved {DROPIN}")


# --- item 4: config validate FILE reads as the caller ---------------------------------


def test_config_validate_of_etc_shadow_shows_nothing_of_it(app):
    hashes = [line.split(":")[1] for line in app.sh("cat /etc/shadow").stdout.splitlines()
              if line.count(":") >= 2 and line.split(":")[1].startswith("$")]
    assert hashes, "no password hash in the container's /etc/shadow to look for"
    assert any(h.startswith("$y$") or h.startswith("$6$") for h in hashes)
    for args in ("config validate /etc/shadow", "config validate --json /etc/shadow",
                 "config validate /home/mallory/../../etc/shadow"):
        r = as_mallory(app, args, env="")
        said = r.stdout + r.stderr
        assert r.returncode == 1, (args, r.returncode, said)
        assert not [h for h in hashes if h in said] and "$y$" not in said and "$6$" not in said, said
        assert "root:" not in said and "mallory:" not in said, said
        if "--json" not in args:
            assert r.stdout == "" and r.stderr.count("\n") == 1, said
            assert "permission denied" in r.stderr and "reads FILE as you" in r.stderr, said
    # Through a link of hers, too.
    app.sh("ln -sf /etc/shadow /home/mallory/shadow.toml", user="mallory")
    r = as_mallory(app, "config validate /home/mallory/shadow.toml", env="")
    assert r.returncode == 1 and "permission denied" in r.stderr and not [h for h in hashes if h in r.stderr]


def test_config_validate_of_her_own_file_still_works(app):
    app.sh("printf '[hub]\\nport = 8123\\n' > /home/mallory/mine.toml && chmod 0600 /home/mallory/mine.toml", user="mallory")
    r = as_mallory(app, "config validate /home/mallory/mine.toml", env="")
    assert (r.returncode, r.stdout, r.stderr) == (0, "/home/mallory/mine.toml: valid\n", "")
    secret = "s3cret-in-a-value"
    app.sh(f"printf '[hub]\\nport = \"{secret}\"\\n' > /home/mallory/bad.toml && chmod 0600 /home/mallory/bad.toml", user="mallory")
    r = as_mallory(app, "config validate /home/mallory/bad.toml", env="")
    assert r.returncode == 1 and r.stderr == (
        "applctl: /home/mallory/bad.toml: hub.port is not accepted: an integer from 1 to 65535\n"), r.stderr
    # The appliance's own file is still read, as root, with or without its path.
    for args in ("config validate", "config validate /etc/jupyterhub/appliance.toml"):
        r = as_mallory(app, args, env="")
        assert (r.returncode, r.stdout) == (0, "/etc/jupyterhub/appliance.toml: valid\n"), (r.stdout, r.stderr)
    # Root itself is not limited.
    r = app.sh(f"applctl config validate {shlex.quote('/home/mallory/bad.toml')}", check=False)
    assert r.returncode == 1 and "hub.port = 's3cret-in-a-value' is not accepted" in r.stderr
