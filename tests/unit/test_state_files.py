"""Root in the hub's directory: nothing planted there is ever followed or leaked."""

import hashlib
import os
import pwd
import stat

import pytest

from appliance import state

NAMES = state.SECRETS


def digest(path) -> tuple:
    st = os.stat(path)
    return (hashlib.sha256(open(path, "rb").read()).hexdigest(), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))


@pytest.fixture
def victim(tmp_path):
    """A root-only file outside the state directory, like /etc/shadow."""
    f = tmp_path / "outside" / "shadow"
    f.parent.mkdir()
    f.write_text("root:$y$secret-hash:19000::::::\n")
    f.chmod(0o600)
    return f


def me() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def test_missing_secrets_are_made_private_and_kept_after(tmp_path):
    d = tmp_path / "state"
    made = state.ensure_secrets(str(d), owner=me())
    assert sorted(made) == sorted(f"{d}/{n}" for n in NAMES)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    before = {n: (d / n).read_text() for n in NAMES}
    assert all(stat.S_IMODE((d / n).stat().st_mode) == 0o600 for n in NAMES)
    assert state.ensure_secrets(str(d), owner=me()) == []  # never replaced: that would log everybody out
    assert {n: (d / n).read_text() for n in NAMES} == before


def test_rotation_replaces_only_the_service_token(tmp_path):
    d = tmp_path / "state"
    state.ensure_secrets(str(d), owner=me())
    before = {n: (d / n).read_text() for n in NAMES}
    assert state.ensure_secrets(str(d), owner=me(), rotate=(state.APPLCTL_TOKEN,)) == [f"{d}/{state.APPLCTL_TOKEN}"]
    after = {n: (d / n).read_text() for n in NAMES}
    assert after[state.APPLCTL_TOKEN] != before[state.APPLCTL_TOKEN]
    assert after[state.COOKIE_SECRET] == before[state.COOKIE_SECRET]


def test_roots_secrets_are_made_in_their_own_directory_owned_by_whoever_runs_it(tmp_path):
    d = tmp_path / "secrets"
    assert state.ensure_secrets(str(d), owner=None, names=state.ROOT_SECRETS) == [
        f"{d}/{state.PROXY_TOKEN}", f"{d}/{state.CRYPT_KEY}"]
    assert state.CRYPT_KEY not in state.ROTATED  # a new key would log every single sign-on person out
    st = os.stat(d / state.PROXY_TOKEN)
    assert (st.st_uid, stat.S_IMODE(st.st_mode), stat.S_IMODE(os.stat(d).st_mode)) == (os.getuid(), 0o600, 0o700)
    assert len(state.read_proxy_token(d) if os.getuid() == 0 else (d / state.PROXY_TOKEN).read_text().strip()) == 64


@pytest.mark.parametrize("plant", ["symlink", "hardlink", "fifo", "dir"])
def test_a_planted_entry_is_replaced_never_followed(tmp_path, victim, plant, capsys):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    before = digest(victim)
    for name in NAMES:
        target = d / name
        if plant == "symlink":
            target.symlink_to(victim)
        elif plant == "hardlink":
            os.link(victim, target)
        elif plant == "fifo":
            os.mkfifo(target)
        else:
            target.mkdir()
    made = state.ensure_secrets(str(d), owner=me())
    assert len(made) == len(NAMES)
    assert digest(victim) == before  # content, owner, group and mode untouched
    for name in NAMES:
        st = os.lstat(d / name)
        assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and stat.S_IMODE(st.st_mode) == 0o600
        assert "secret-hash" not in (d / name).read_text()
    out = capsys.readouterr()
    assert "secret-hash" not in out.out + out.err and "replaced it without following it" in out.err


def test_a_state_directory_that_is_a_link_is_refused(tmp_path, victim):
    link = tmp_path / "state"
    link.symlink_to(victim.parent)
    with pytest.raises(state.StateError, match="not a link"):
        state.ensure_secrets(str(link), owner=me())
    assert sorted(os.listdir(victim.parent)) == ["shadow"]


def test_readers_refuse_links_and_strangers_files(tmp_path, victim):
    d = tmp_path / "state"
    state.ensure_secrets(str(d), owner=me())
    token = d / state.APPLCTL_TOKEN
    assert len(state.read_secret(token, owners=(os.getuid(),))) == 64
    token.unlink()
    token.symlink_to(victim)
    with pytest.raises(state.StateError, match="is a link"):
        state.read_secret(token, owners=(os.getuid(),))
    token.unlink()
    os.link(victim, token)
    with pytest.raises(state.StateError, match="not a private file"):
        state.read_secret(token, owners=(os.getuid(),))
    if os.getuid() == 0:
        token.unlink()
        token.write_text("x" * 64)
        os.chown(token, 65534, 65534)
        with pytest.raises(state.StateError, match="not a private file"):
            state.read_secret(token, owners=(0,))


@pytest.mark.skipif(os.getuid() != 0, reason="root's secret")
def test_a_downgrade_gets_the_running_proxys_token_in_the_hubs_directory_past_a_planted_link(tmp_path, victim,
                                                                                            monkeypatch):
    secrets_dir, hub_dir = tmp_path / "secrets", tmp_path / "state"
    state.ensure_secrets(str(secrets_dir), owner=None, names=state.ROOT_SECRETS)
    hub_dir.mkdir(mode=0o700)
    (hub_dir / state.PROXY_TOKEN).symlink_to(victim)
    before = digest(victim)
    monkeypatch.setattr(state, "read_proxy_token", lambda: state.read_secret(secrets_dir / state.PROXY_TOKEN))
    state.hand_back_proxy_token(str(hub_dir), owner=me())
    assert digest(victim) == before
    st = os.lstat(hub_dir / state.PROXY_TOKEN)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert (hub_dir / state.PROXY_TOKEN).read_text() == (secrets_dir / state.PROXY_TOKEN).read_text()
