"""applctl proxy's pure parts: checking what it is given, rendering both templates,
the password file's hashes, and putting files back after a refused change."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest

from appliance.revproxy import htpasswd, install, layout
from appliance.revproxy.install import Change, SetupError, trusted_file, write_site
from appliance.revproxy.site import Site, SiteError, check, render

TEMPLATES = Path(__file__).parents[2] / "etc/jupyterhub-appliance"


def site(**kw) -> Site:
    base = dict(kind="nginx", server_name="hub.example.org", cert="/etc/ssl/hub.pem", key="/etc/ssl/hub.key")
    return check(Site(**(base | kw)))


@pytest.mark.parametrize("kw, says", [
    ({"server_name": "my hub"}, "is not a host name"),
    ({"server_name": "hub.example.org/../x"}, "is not a host name"),
    ({"server_name": "-hub.example.org"}, "is not a host name"),
    ({"kind": "caddy"}, "choose nginx or apache"),
    ({"cert": "relative.pem"}, "give an absolute path"),
    ({"key": "/etc/ssl/my key.pem"}, "give an absolute path"),
    ({"cert": "/etc/ssl/a;b.pem"}, "give an absolute path"),
    ({"cert": "/etc/ssl/../shadow"}, "give an absolute path"),
    ({"max_upload": "lots"}, "give a size such as 0"),
    ({"http_port": 443}, "must differ"),
])
def test_bad_arguments_say_what_is_accepted(kw, says):
    with pytest.raises(SiteError, match=says):
        site(**kw)


def test_server_names_are_normalised():
    assert site(server_name="Hub.Example.ORG.").server_name == "hub.example.org"


@pytest.mark.parametrize("kind", ["nginx", "apache"])
def test_both_templates_render_with_every_placeholder_known(kind):
    for password in (None, "/etc/jupyterhub-appliance/htpasswd"):
        s = site(kind=kind, https_port=8443, max_upload="2G", htpasswd=password)
        text = render((TEMPLATES / f"{kind}-site.conf.in").read_text(), s, [8443] if kind == "apache" else [])
        assert not re.search(r"@[A-Z_]+@", text)  # nothing left unfilled
        assert "hub.example.org" in text and "/etc/ssl/hub.pem" in text and "127.0.0.1:8000" in text
        assert ("htpasswd" in text) == (password is not None)
        assert "https://hub.example.org:8443" in text  # the redirect keeps a non-default port
        if kind == "nginx":
            assert "client_max_body_size 2g;" in text and "proxy_read_timeout 1d;" in text
            assert "$http_upgrade" in text and "server_tokens off;" in text
        else:
            assert f"LimitRequestBody {2 * 1024**3}" in text and "upgrade=websocket" in text
            assert "Listen 8443\n" in text and "ServerTokens Prod" in text


def test_an_unknown_placeholder_in_an_edited_template_is_refused():
    with pytest.raises(SiteError, match="placeholders applctl does not know: TYPO"):
        render("server_name @TYPO@;", site())


def test_the_password_hash_is_bcrypt_that_the_system_crypt_accepts():
    line = htpasswd.line("hub", "a long passphrase")
    user, hashed = line.strip().split(":", 1)
    assert user == "hub" and hashed.startswith("$2y$10$")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # what nginx uses (libxcrypt)
    assert crypt.crypt("a long passphrase", hashed) == hashed
    assert crypt.crypt("wrong", hashed) != hashed


@pytest.mark.parametrize("password, says", [
    ("", "empty"), ("short", "shorter than 8"), ("x" * 73, "longer than 72"), ("two\nlines!", "line break")])
def test_bad_passwords_are_refused(password, says):
    with pytest.raises(htpasswd.PasswordError, match=says):
        htpasswd.line("hub", password)


def test_a_refused_change_puts_back_exactly_what_was_there(tmp_path):
    lay = layout.Layout("nginx", "nginx", "/bin/true", tmp_path / "avail/site.conf", tmp_path / "enabled/site.conf",
                        "no-such-service-for-tests", ("/bin/false",), "root")
    (tmp_path / "avail").mkdir()
    (tmp_path / "enabled").mkdir()
    lay.site.write_text("old site\n")
    os.chmod(lay.site, 0o640)
    extra = tmp_path / "htpasswd"  # absent before: must be absent after
    with pytest.raises(SetupError, match="refused the new configuration"):
        with Change(lay, [extra]) as change:
            write_site(lay, "new site\n")
            extra.write_text("x")
            change.commit()
    assert lay.site.read_text() == "old site\n" and (os.stat(lay.site).st_mode & 0o777) == 0o640
    assert not os.path.lexists(lay.enabled) and not extra.exists()


def test_a_change_the_check_refuses_leaves_the_running_server_alone(tmp_path, monkeypatch):
    """Refused by the server's own check: the running server never saw it, so it is
    neither reloaded nor restarted (a restart would cut its open connections)."""
    lay = layout.Layout("nginx", "nginx", "/bin/true", tmp_path / "avail/site.conf", tmp_path / "enabled/site.conf",
                        "nginx", ("/bin/false",), "root")
    (tmp_path / "avail").mkdir()
    (tmp_path / "enabled").mkdir()
    ran = []
    real_run = install._run
    monkeypatch.setattr(install, "is_active", lambda service: True)
    monkeypatch.setattr(install, "_run", lambda argv: ran.append(list(argv)) or real_run(argv))
    with pytest.raises(SetupError, match="refused the new configuration"):
        with Change(lay) as change:
            write_site(lay, "new site\n")
            change.commit()
    assert ran == [["/bin/false"]], ran


def test_a_failed_reload_restarts_the_server_on_the_old_configuration(tmp_path, monkeypatch):
    lay = layout.Layout("nginx", "nginx", "/bin/true", tmp_path / "avail/site.conf", tmp_path / "enabled/site.conf",
                        "nginx", ("/bin/true",), "root")
    (tmp_path / "avail").mkdir()
    (tmp_path / "enabled").mkdir()
    ran = []
    monkeypatch.setattr(install, "is_active", lambda service: True)
    monkeypatch.setattr(install, "_workers", lambda service: set())
    monkeypatch.setattr(install, "_run", lambda argv: (ran.append(list(argv)),
                                                       (argv[0] != "systemctl" or argv[1] == "restart", "no"))[1])
    with pytest.raises(SetupError, match="systemctl reload nginx failed"):
        with Change(lay) as change:
            write_site(lay, "new site\n")
            change.commit()
    assert ran == [["/bin/true"], ["systemctl", "reload", "nginx"], ["systemctl", "restart", "nginx"]], ran


def test_a_certificate_in_a_directory_others_can_write_is_refused(tmp_path):
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(d, 0o777)
    (d / "c.pem").write_text("x")
    with pytest.raises(SetupError, match=f"{d} is writable by others, so someone other than root could put"):
        trusted_file("--cert", str(d / "c.pem"))
    with pytest.raises(SetupError, match="give an existing file"):
        trusted_file("--cert", str(tmp_path / "missing.pem"))


@pytest.mark.skipif(os.getuid() != 0, reason="the certificate must be root's")
def test_a_link_on_the_way_to_a_certificate_counts_as_what_the_site_names(tmp_path):
    """What is written into the site (the path as given) is what was checked: every
    directory a link on the way lives in, not only where it leads in the end."""
    for p in (tmp_path, tmp_path.parent):
        assert not (os.stat(p).st_mode & 0o022) or os.stat(p).st_mode & 0o1000
    safe = tmp_path / "ssl"
    safe.mkdir(mode=0o755)
    cert = safe / "c.pem"
    cert.write_text("x")
    live = tmp_path / "live"  # as certbot's live/NAME/fullchain.pem -> ../../archive/NAME/fullchain1.pem
    live.mkdir(mode=0o755)
    (live / "c.pem").symlink_to("../ssl/c.pem")
    assert trusted_file("--cert", str(live / "c.pem")) == live / "c.pem"  # as given: a renewal moves the link
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    (theirs / "c.pem").symlink_to(cert)  # the end is root's, but nobody may swap the link
    with pytest.raises(SetupError, match=f"{theirs} is owned by uid 65534"):
        trusted_file("--cert", str(theirs / "c.pem"))
    (live / "hop.pem").symlink_to(theirs / "c.pem")  # two hops: the middle one counts too
    with pytest.raises(SetupError, match=f"{theirs} is owned by uid 65534"):
        trusted_file("--cert", str(live / "hop.pem"))


def test_apache_listens_are_read_so_no_port_is_declared_twice(tmp_path):
    ports = tmp_path / "ports.conf"
    ports.write_text("Listen 80\n<IfModule ssl_module>\n\tListen 443\n</IfModule>\n# Listen 8080\n")
    lay = layout.Layout("apache", "apache2", "/bin/true", tmp_path / "s", None, "x", ("/bin/true",), "root",
                        listen_files=(ports,))
    assert layout.apache_listens(lay) == {80, 443}


def test_arch_needs_an_include_line_and_says_which(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text("http {\n    # include sites-enabled/*.conf;\n}\n")
    lay = layout.Layout("nginx", "nginx", "/bin/true", tmp_path / "s", None, "x", ("/bin/true",), "http",
                        includer=conf, include_line="include sites-enabled/*.conf;")
    assert not layout.included(lay)
    conf.write_text("http {\n    include sites-enabled/*.conf;\n}\n")
    assert layout.included(lay)


@pytest.mark.parametrize("args, says", [
    (["proxy", "setup", "caddy", "--server-name", "h.example.org", "--self-signed"], "'caddy' is not one of"),
    (["proxy", "setup", "nginx", "--server-name", "h.example.org"], "give either --cert FILE and --key FILE"),
    (["proxy", "setup", "nginx", "--server-name", "h.example.org", "--self-signed", "--cert", "/x"],
     "give either --cert FILE and --key FILE"),
    (["proxy", "setup", "nginx", "--server-name", "h.example.org", "--self-signed", "--https-port", "0"],
     "invalid value for '--https-port'"),
])
def test_setup_refuses_bad_arguments_before_anything(capsys, monkeypatch, args, says):
    from appliance.applctl import main
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code in (1, 2) and says in capsys.readouterr().err
