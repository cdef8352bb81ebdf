"""nginx and Apache from Debian in the booted appliance, for the tests of `applctl
proxy` (test_8_reverse_proxy, test_5_low): installed as an administrator would, but
not started by the packages (their default sites would take port 80 of the shared
network), with a certificate for NAME made here."""

from __future__ import annotations

from booted import free_port

NAME = "hub.test"
CERT, KEY = "/etc/ssl/appliance-test/hub.pem", "/etc/ssl/appliance-test/hub.key"


def install(app) -> None:
    app.sh("printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d")
    try:
        app.sh("apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
               "--no-install-recommends nginx apache2 >/dev/null")
    finally:
        app.sh("rm -f /usr/sbin/policy-rc.d")
    # Apache needs one Listen of its own to start with no site; applctl adds a Listen
    # for each port of the site that ports.conf does not have.
    app.sh("rm -f /etc/nginx/sites-enabled/default && a2dissite -q 000-default && "
           f"echo 'Listen 127.0.0.1:{free_port()}' > /etc/apache2/ports.conf")
    app.sh(f"mkdir -p /etc/ssl/appliance-test && openssl req -x509 -newkey rsa:2048 -nodes -days 30 "
           f"-subj /CN={NAME} -addext subjectAltName=DNS:{NAME} -keyout {KEY} -out {CERT} 2>/dev/null "
           f"&& chmod 600 {KEY}")


def purge(app) -> None:
    """The container is shared with the other system tests: leave no web server behind."""
    app.sh("applctl proxy remove >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get purge -y -q nginx "
           "nginx-common apache2 apache2-bin >/dev/null 2>&1", check=False)
