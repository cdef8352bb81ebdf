"""The hub's managed services end quietly when the hub stops them (SIGINT)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]


def test_sigint_from_the_hub_ends_a_service_with_status_0_and_no_traceback():
    service = subprocess.Popen(
        [sys.executable, "-c", "from appliance.hub.service_life import die_with_parent\n"
                               "import time\ndie_with_parent()\nprint('up', flush=True)\ntime.sleep(30)"],
        cwd=TOP, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert service.stdout.readline() == "up\n"
    time.sleep(0.1)
    service.send_signal(signal.SIGINT)
    out, err = service.communicate(timeout=10)
    assert service.returncode == 0 and "Traceback" not in err, err
