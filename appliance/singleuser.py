"""ExecStart of every user's server: jupyterhub-singleuser, started without cyclic
garbage collection until it serves.

This file runs in the user environment, not the hub's: scripts/stage-tree installs
it there as bin/appliance-singleuser. So it imports nothing but the standard
library and that environment's jupyterhub.

Why: a server's start is mostly imports (Jupyter Server, JupyterLab, SQLAlchemy
through jupyterhub.singleuser), which make long-lived objects, and the collections
they trigger cost about a seventh of that CPU time on Debian 12's Python 3.11
(measured: 1.22 s against 1.05 s). With 20 servers starting at once on two cores,
that CPU is the wait.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading

# If the server never ran this loop (a future Jupyter Server making its own), turn
# collection on anyway rather than run without it for the server's life.
FALLBACK_SECONDS = 300


def collect_from_now_on() -> None:
    if not gc.isenabled():
        gc.freeze()  # what the start made lives as long as the server: out of later collections
        gc.enable()


def main() -> int:
    gc.disable()
    # Jupyter Server runs on the current asyncio loop (tornado's IOLoop.current()),
    # and starts it only once it listens: the first thing that loop runs marks the
    # end of the start.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.call_soon(collect_from_now_on)
    fallback = threading.Timer(FALLBACK_SECONDS, collect_from_now_on)
    fallback.daemon = True
    fallback.start()
    from jupyterhub.singleuser import main as singleuser

    sys.argv[0] = "jupyterhub-singleuser"  # what its help and logs call it
    return singleuser()


if __name__ == "__main__":
    sys.exit(main())
