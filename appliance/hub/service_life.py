"""For the hub's own managed services (dashboard, reclaimer): end with the hub.

JupyterHub stops its services when it shuts down cleanly, and systemd kills what is
left in the unit's cgroup; but a hub that dies hard, or a cgroup kill that fails
(seen in containers: "Failed to kill control group ... Input/output error"), would
leave a service serving with the old hub's OAuth secret and holding its port, so
the next hub's service could not start. The kernel's parent-death signal closes
that gap.

JupyterHub stops its services with SIGINT: for them a normal stop, which ends
them quietly, not with a KeyboardInterrupt traceback in the hub's journal.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def _stopped(signum, frame) -> None:
    raise SystemExit(0)


def die_with_parent() -> None:
    signal.signal(signal.SIGINT, _stopped)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() == 1:  # the hub died before the line above
        raise SystemExit("the hub that started this service is gone")
