"""config_edit: applctl config set/unset/edit keep the file's comments, check values
against the schema before writing, and write atomically under a lock."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from appliance import config
from appliance import config_edit as ce

TOP = Path(__file__).resolve().parents[2]


@pytest.fixture
def shipped(tmp_path) -> Path:
    """The default appliance.toml as the package installs it."""
    path = tmp_path / "appliance.toml"
    shutil.copy(TOP / "etc/jupyterhub/appliance.toml", path)
    return path


def test_set_goes_under_its_documenting_comment_and_keeps_every_comment(shipped):
    before = shipped.read_text()
    r = ce.set_key(shipped, "hub.port", "8080")
    after = shipped.read_text()
    assert r == {"key": "hub.port", "file": str(shipped), "changed": True, "previous": 8000,
                 "previous_set": False, "value": 8080}
    assert "# port = 8000\nport = 8080\n" in after
    assert after.replace("port = 8080\n", "", 1) == before  # nothing else moved or vanished
    assert config.load(shipped)["hub"]["port"] == 8080


def test_replacing_a_value_keeps_its_place_and_trailing_comment(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_text('[spawner]\nmem_limit = "2G"  # our biggest box\ncpu_limit = 2\n')
    ce.set_key(path, "spawner.mem_limit", "8G")
    assert path.read_text() == '[spawner]\nmem_limit = "8G"  # our biggest box\ncpu_limit = 2\n'


@pytest.mark.parametrize("key, text, value", [
    ("hub.port", "8080", 8080),
    ("hub.bind_address", "127.0.0.1", "127.0.0.1"),    # a text key: taken as text
    ("spawner.mem_limit", "4G", "4G"),
    ("spawner.mem_limit", '"4G"', "4G"),              # quoted TOML text works too
    ("spawner.default_url", "8000", "8000"),          # a text key never becomes a number
    ("spawner.cpu_limit", "2.5", 2.5),
    ("culler.enabled", "false", False),
    ("gpu.quota_groups", "{ml = 2}", {"ml": 2}),
    ("gpu.quota_users.alice", "2", 2),
    ("profiles.big.display_name", "Big machine", "Big machine"),  # not TOML: text
    ("limits.total_cpu", "1.5", 1.5),                  # "auto" by default, yet a number
    ("limits.total_cpu", "0", 0),                      # 0: no cap
    ("limits.total_cpu", "auto", "auto"),
    ("limits.total_memory", "96G", "96G"),
])
def test_values_are_read_as_toml_or_as_text_by_the_schema(key, text, value):
    assert ce.parse_value(ce.parse_key(key), text) == value


def test_a_table_inside_a_section_is_written_inline_and_edited_cleanly(shipped):
    ce.set_key(shipped, "gpu.quota_users.alice", "2")
    ce.set_key(shipped, "gpu.quota_users.bob", "3")
    assert "# quota_users = {}\nquota_users = {alice = 2, bob = 3}\n" in shipped.read_text()
    assert ce.unset_key(shipped, "gpu.quota_users.alice")["changed"] is True
    assert "\nquota_users = {bob = 3}\n" in shipped.read_text()
    assert config.load(shipped)["gpu"]["quota_users"] == {"bob": 3}


def test_a_profile_gets_its_own_table(tmp_path):
    path = tmp_path / "appliance.toml"
    ce.set_key(path, "profiles.gpu1.display_name", "One GPU")
    ce.set_key(path, "profiles.gpu1.gpus", "1")
    assert "[profiles.gpu1]\ndisplay_name = \"One GPU\"\ngpus = 1\n" in path.read_text()
    assert config.load(path)["profiles"]["gpu1"]["gpus"] == 1


@pytest.mark.parametrize("key, text, says", [
    ("hub.port", "70000", "hub.port = 70000 is not accepted: an integer from 1 to 65535"),
    ("hub.port", "eighty", "hub.port = 'eighty' is not accepted: an integer from 1 to 65535"),
    ("hub.prot", "80", "hub.prot = 80 is not accepted: known keys in [hub] are port,"),
    ("hubb.port", "80", "hubb = {'port': 80} is not accepted: known sections are"),
    ("spawner.mem_limit", "lots", "spawner.mem_limit = 'lots' is not accepted: a size such as"),
    ("culler.enabled", "yes", "culler.enabled = 'yes' is not accepted: true or false"),
    ("gpu.quota_users.Bad-Name", "1", "gpu.quota_users.Bad-Name = 1 is not accepted: a user name"),
])
def test_bad_values_are_refused_and_nothing_is_written(shipped, key, text, says):
    before = shipped.read_bytes()
    with pytest.raises(ce.EditError) as e:
        ce.set_key(shipped, key, text)
    assert says in str(e.value) and str(e.value).endswith("the file is unchanged")
    assert shipped.read_bytes() == before
    assert sorted(os.listdir(shipped.parent)) == ["appliance.toml"]  # no temp file left behind


@pytest.mark.parametrize("key", ["a b", "../x", "hub..port", "", "x" * 300, "a.b.c.d.e", "hub.port\n[x]"])
def test_malformed_keys_are_refused_with_the_form_keys_take(key):
    with pytest.raises(ce.EditError, match="is not a configuration key: keys look like SECTION.KEY"):
        ce.parse_key(key)


def test_a_section_is_not_a_value(shipped):
    with pytest.raises(ce.EditError, match="hub is a section; set one of its keys, e.g. hub.port"):
        ce.set_key(shipped, "hub", "1")


def test_unset_brings_the_default_back_and_is_idempotent(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_text("[hub]\n# the public port\nport = 8080\n")
    r = ce.unset_key(path, "hub.port")
    assert (r["changed"], r["previous"], r["value"]) == (True, 8080, 8000)
    assert path.read_text() == "[hub]\n# the public port\n"
    again = ce.unset_key(path, "hub.port")
    assert again["changed"] is False and path.read_text() == "[hub]\n# the public port\n"


def test_a_write_keeps_the_mode_and_replaces_the_file_atomically(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_text("[hub]\nport = 1\n")
    path.chmod(0o640)
    inode = path.stat().st_ino
    ce.set_key(path, "hub.port", "2")
    assert path.stat().st_mode & 0o777 == 0o640
    assert path.stat().st_ino != inode  # a new file renamed over the old one, never rewritten in place


def test_a_second_writer_waits_for_the_lock_then_gives_up_clearly(tmp_path):
    path = tmp_path / "appliance.toml"
    held, release = threading.Event(), threading.Event()

    def holder():
        with ce.locked(path):
            held.set()
            release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    try:
        with pytest.raises(ce.EditError, match="another applctl is changing"):
            with ce.locked(path, timeout=0.3):
                pass
    finally:
        release.set()
        t.join()
    with ce.locked(path, timeout=0.3):  # free again
        pass


def test_edit_refuses_to_replace_a_file_changed_meanwhile_or_an_invalid_one(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_text("[hub]\nport = 1\n")
    with pytest.raises(ce.EditError, match="spawner.mem_limit = 'lots' is not accepted"):
        ce.replace(path, '[spawner]\nmem_limit = "lots"\n', "[hub]\nport = 1\n")
    with pytest.raises(ce.EditError, match="was changed by someone else while you were editing"):
        ce.replace(path, "[hub]\nport = 3\n", "[hub]\nport = 2\n")
    assert path.read_text() == "[hub]\nport = 1\n"
    ce.replace(path, "[hub]\nport = 3  # mine\n", "[hub]\nport = 1\n")
    assert path.read_text() == "[hub]\nport = 3  # mine\n"


def test_effective_shows_file_values_over_defaults_and_marks_defaults(tmp_path):
    path = tmp_path / "appliance.toml"
    text = '[spawner]\nmem_limit = "4G"\n'
    values, from_file = ce.effective(text, path)
    assert values["spawner"]["mem_limit"] == "4G"  # as written, not in bytes
    assert values["hub"]["port"] == 8000
    rendered = ce.render_effective(values, from_file)
    assert 'mem_limit = "4G"\n' in rendered
    assert "port = 8000 # default\n" in rendered
    assert config.loads(rendered).as_dict() == config.loads(text).as_dict()  # it can be pasted back


@pytest.mark.parametrize("key, says", [
    ("hub.prot", "hub.prot is not a configuration key: known keys in [hub] are port, bind_address"),
    ("hubb.port", "hubb.port is not a configuration key: known sections are hub,"),
    ("gpu.quota_users.alice", "gpu.quota_users.alice is not set"),
])
def test_lookup_of_an_unknown_key_says_what_exists(tmp_path, key, says):
    values, _ = ce.effective("", tmp_path / "appliance.toml")
    with pytest.raises(ce.EditError) as e:
        ce.lookup(values, ce.parse_key(key))
    assert str(e.value).startswith(says)


def test_show_value_writes_toml_and_plain_text_for_scripts():
    assert ce.show_value("4G") == '"4G"'
    assert ce.show_value("4G", quote=False) == "4G"
    assert ce.show_value(True) == "true"
    assert ce.show_value({"alice": 2}) == "{alice = 2}"
