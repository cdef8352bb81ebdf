"""This tree's .deb for each Debian release (scripts/build-deb --release), built once
per run, and lintian's verdict on it (that release's lintian, scripts/lintian-deb).
A build can start in the background as soon as the tests that need it are
collected, so its minutes overlap other tests; `in_background` is also how the
previous version's .deb is built (previous.py).

APPLIANCE_DEB_TRIXIE / APPLIANCE_DEB_BOOKWORM name an already built .deb instead
(APPLIANCE_DEB: the default release's).

A whole run (scripts/test) is three pytest processes side by side (the main run, the
packaging lane, the real-kernel tier): the main one publishes the default release's
.deb, once built, to the file APPLIANCE_DEB_PUBLISH names, and the others wait for it
in the file APPLIANCE_DEB_AWAIT names, so the package is built once.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from container import DEFAULT_RELEASE, check_release

TOP = Path(__file__).resolve().parents[2]
_lock = threading.Lock()
_jobs: dict[str, Future] = {}
_one_at_a_time = threading.Lock()
seconds: dict[str, float] = {}  # how long each job took, for the run's last lines
build_lines: list[str] = []  # build-deb's and lintian-deb's own account of their time (chroot, build, lintian)


def in_background(name: str, make: Callable[[], object], one_at_a_time: bool = False,
                  after: Future | None = None) -> Future:
    """make() in a thread of its own, once per run; its result or exception is handed
    to whoever waits on the Future. Jobs started with one_at_a_time run one after
    another: on a 2-core machine, three builds beside the tests made the hub too
    slow for their timeouts. `after`: a job whose result make() needs, awaited before
    queueing for one_at_a_time (waiting inside it, on a job queued behind, would deadlock)."""
    with _lock:
        job = _jobs.get(name)
        if job is None:
            job = _jobs[name] = Future()

            def run(job: Future = job) -> None:
                t0 = time.monotonic()
                try:
                    if after is not None:
                        after.result()
                        t0 = time.monotonic()
                    if one_at_a_time:
                        with _one_at_a_time:
                            t0 = time.monotonic()
                            job.set_result(make())
                    else:
                        job.set_result(make())
                except BaseException as e:
                    job.set_exception(e)
                finally:
                    seconds[name] = time.monotonic() - t0

            threading.Thread(target=run, name=name, daemon=True).start()
        return job


AWAIT_SECONDS = 3600  # the main run's build, behind the container base it may wait for


def given_path(release: str) -> str | None:
    path = os.environ.get(f"APPLIANCE_DEB_{release.upper()}")
    if not path and release == DEFAULT_RELEASE:
        path = os.environ.get("APPLIANCE_DEB")
    return path or None


def given(release: str) -> Path | None:
    path = given_path(release)
    if path:
        return Path(path)
    if release == DEFAULT_RELEASE and os.environ.get("APPLIANCE_DEB_AWAIT"):
        return awaited(Path(os.environ["APPLIANCE_DEB_AWAIT"]))
    return None


def awaited(handoff: Path) -> Path:
    """The .deb another run of this tree publishes (publish()), once it is there."""
    deadline = time.monotonic() + AWAIT_SECONDS
    while not handoff.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no .deb was published to {handoff} in {AWAIT_SECONDS} s")
        time.sleep(1)
    said = handoff.read_text().strip()
    if said.startswith("error:"):
        raise RuntimeError(f"the run that builds the .deb said: {said}")
    return Path(said)


def publish(release: str, said: str) -> None:
    """Hand the default release's .deb (or why there is none) to the run awaiting it."""
    handoff = os.environ.get("APPLIANCE_DEB_PUBLISH")
    if handoff and release == DEFAULT_RELEASE:
        tmp = Path(f"{handoff}.tmp")
        tmp.write_text(said + "\n")
        tmp.replace(handoff)  # whole or not at all


def build(release: str) -> Path:
    """scripts/build-deb --release RELEASE, now; the path it prints last."""
    out = subprocess.run([str(TOP / "scripts/build-deb"), "--release", check_release(release)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        said = [line for line in out.stderr.splitlines() if not line.startswith("WARNING: Location")]
        raise RuntimeError(f"scripts/build-deb --release {release} exited {out.returncode}:\n" + "\n".join(said[-40:]))
    build_lines.extend(line for line in out.stderr.splitlines() if line.startswith(f"build-deb: {release}: "))
    return Path(out.stdout.strip().splitlines()[-1])


def start(release: str = DEFAULT_RELEASE, one_at_a_time: bool = False) -> Future:
    def make() -> Path:
        try:
            path = given(release) or build(release)
        except BaseException as e:
            publish(release, f"error: {e}".replace("\n", " "))
            raise
        publish(release, str(path))
        return path
    awaiting = release == DEFAULT_RELEASE and os.environ.get("APPLIANCE_DEB_AWAIT") and not given_path(release)
    return in_background(f"deb-{release}" + (" (awaited from the main run)" if awaiting else ""), make, one_at_a_time)


def lintian(release: str = DEFAULT_RELEASE) -> Future:
    """The release's own lintian on the release's .deb (scripts/lintian-deb, in a
    cached chroot of that release), in the background: minutes of one core for its
    35,000 files, which other tests overlap. Its CompletedProcess. Root, debootstrap
    and systemd-nspawn are there: the system tier skips (or, under CI, fails) without."""
    def run() -> subprocess.CompletedProcess:
        package = deb(release)  # built already: `after`
        r = subprocess.run([str(TOP / "scripts/lintian-deb"), "--release", release, str(package)],
                           capture_output=True, text=True, timeout=1800)
        build_lines.extend(line for line in r.stderr.splitlines() if line.startswith(f"lintian-deb: {release}: "))
        return r
    return in_background(f"lintian-{release}", run, one_at_a_time=True, after=start(check_release(release)))


def deb(release: str = DEFAULT_RELEASE) -> Path:
    """The release's .deb, once built (the build starts now if it has not)."""
    return start(release).result()
