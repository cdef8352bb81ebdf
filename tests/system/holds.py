"""Holding a user's next server start until the test has seen the spawn's events.

A fast spawn is the product working: on an idle machine a server is ready in under
a second, and a progress stream (or the spawn-pending page) joined after that gets
only "Server ready", because JupyterHub replays the events of a pending spawn
only. A test that must see what a start said (the GPUs it was given, the CPU-only
fallback, the progress page) holds the start: the user's own
~/.jupyter/jupyter_server_config.py, which every server start loads, waits for a
file the test makes once it has seen what it waits for. Whatever the machine's
speed, the events are then there to read.

Facts a test can read from the daemon or the unit (which GPU a server holds) are
read there, not from a stream.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

RELEASE = ".appliance-test-release"
CONFIG = ".jupyter/jupyter_server_config.py"
# Bounded: a test that fails before releasing leaves no server waiting for ever.
WAIT = f"""import os, time
_release = os.path.expanduser("~/{RELEASE}")
_until = time.monotonic() + 120
while not os.path.exists(_release) and time.monotonic() < _until:
    time.sleep(0.05)
"""


@contextmanager
def held_start(app, user: str):
    """Within: the user's next server start waits; yields release(). On leaving, the
    start is released (if it was not) and the user's config file is gone. The
    release file stays: removing it could catch a start that has not yet looked."""
    home = app.sh(f"getent passwd {user} | cut -d: -f6").stdout.strip()
    app.sh(f"rm -f {home}/{RELEASE} && mkdir -p {home}/.jupyter && cat > {home}/{CONFIG}", user=user, input=WAIT)

    def release() -> None:
        app.sh(f"touch {home}/{RELEASE}", user=user)

    try:
        yield release
    finally:
        release()
        app.sh(f"rm -f {home}/{CONFIG}", user=user, check=False)


def spawn_seeing(app, b, user: str, fields: dict[str, str], until: str) -> tuple[bool, list[str]]:
    """Submit the spawn form with the start held, read its progress until an event
    says `until`, release it, and wait for the outcome: (ready, messages so far and
    after). The form's answer comes after JupyterHub's slow-spawn wait, so it is
    submitted from a thread."""
    with held_start(app, user) as release:
        post = threading.Thread(target=b.spawn_with_form, args=(user, fields), daemon=True)
        post.start()
        seen = b.progress_until(user, until)
        release()
    post.join(120)
    ready, after = b.spawn_outcome(user)
    return ready, seen + after
