"""The .deb's preinst refuses a downgrade before anything is unpacked: the real
script, with the version build-deb puts in, run with dpkg's arguments."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PREINST = Path(__file__).resolve().parents[2] / "packaging/debian/preinst"


@pytest.fixture
def preinst(tmp_path) -> Path:
    if not shutil.which("dpkg"):
        pytest.skip("dpkg --compare-versions is Debian's")
    script = tmp_path / "preinst"
    script.write_text(PREINST.read_text().replace("@VERSION@", "0.3.0"))
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("args, refused", [
    (["install"], False),
    (["upgrade", "0.2.0"], False),  # an upgrade
    (["upgrade", "0.3.0"], False),  # a reinstall
    (["upgrade", "0.4.0"], True),
    (["upgrade", "0.3.0+deb13"], True),  # newer in dpkg's order
    (["abort-upgrade", "0.4.0"], False),
])
def test_a_downgrade_is_refused_with_a_clear_message(preinst, args, refused):
    r = subprocess.run([str(preinst), *args], capture_output=True, text=True)
    assert (r.returncode != 0) == refused, r
    if refused:
        assert f"downgrading from {args[1]} to 0.3.0 is not supported" in r.stderr
        assert "Nothing was changed" in r.stderr
