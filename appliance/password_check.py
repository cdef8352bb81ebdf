"""jupyterhub-pam: answers the hub's one question, "is this password right for NAME?",
so that the hub itself needs no access to /etc/shadow (code run in the hub would
otherwise read every password hash).

Root, for pam_unix to read /etc/shadow and pam_faillock to keep its tallies in
/run/faillock, but without capabilities (units/jupyterhub-pam.service);
socket-activated; one JSON line per connection, from uid jupyterhub or root only
(SO_PEERCRED). It runs the appliance's PAM service as the hub did: auth, then
account, so pam_faillock lockouts and expired or locked accounts refuse a login
as before. Failed attempts are limited per name and per source address (the
address the hub saw) before PAM is asked at all; an attempt counts from its start,
so guesses sent at once count as well.

Request: {"user": NAME, "password": PASSWORD, "source": ADDRESS}
Reply:   {"ok": true, "right": true|false}
         {"ok": false, "error": {"code": "too_many" | "invalid" | "forbidden", "message": ...}}
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from typing import Any, Callable

from .activation import hub_uid, listening_socket, peer_uid, run
from .groups import PAM_SERVICE, RUNTIME_DIR

SOCKET = RUNTIME_DIR + "/pam.sock"
UNIT, SERVICE_UNIT = "jupyterhub-pam.socket", "jupyterhub-pam.service"
# Failed logins allowed per WINDOW seconds: a person who mistypes a few times is
# never stopped, a guesser gets 5 tries per name in 5 minutes, and one address 30
# over all the names it tries.
WINDOW = 300.0
PER_NAME = 5
PER_SOURCE = 30
MAX_LINE = 16384
MAX_NAME, MAX_PASSWORD, MAX_SOURCE = 256, 4096, 100
DEADLINE = 10.0
# PAM calls at once (each in a thread; pam_unix sleeps ~2 s after a wrong password).
PAM_THREADS = 4
# Beyond this many names or sources remembered, expired ones are dropped.
MAX_KEYS = 10000

log = logging.getLogger("jupyterhub-pam")


class Refused(Exception):
    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


class Attempts:
    """Attempts in the last `window` seconds, per key: admitted while fewer than
    `limit`; an attempt that turns out right is taken back."""

    def __init__(self, limit: int, window: float = WINDOW, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self.times: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        times = self.times.setdefault(key, deque())
        while times and times[0] <= self.clock() - self.window:
            times.popleft()
        return times

    def wait(self, key: str) -> float:
        """Seconds until `key` may try again; 0 if now."""
        times = self._recent(key)
        return 0.0 if len(times) < self.limit else times[0] + self.window - self.clock()

    def start(self, key: str) -> float:
        if len(self.times) > MAX_KEYS:
            for k in [k for k in self.times if not self._recent(k)]:
                del self.times[k]
        now = self.clock()
        self._recent(key).append(now)
        return now

    def forget(self, key: str) -> None:
        self.times.pop(key, None)

    def take_back(self, key: str, when: float) -> None:
        times = self.times.get(key)
        if times and when in times:
            times.remove(when)


def _text(req: dict, key: str, most: int, what: str) -> str:
    value = req.get(key)
    if not isinstance(value, str) or not value or len(value) > most:
        raise Refused("invalid", f"{key!r} must be {what} of 1 to {most} characters")
    if "\0" in value or (key != "password" and not value.isprintable()):
        raise Refused("invalid", f"{key!r} may not hold control characters")
    return value


def parse(line: bytes) -> tuple[str, str, str]:
    try:
        req = json.loads(line)
    except (ValueError, RecursionError):
        raise Refused("invalid", "a request is one line of JSON") from None
    if not isinstance(req, dict) or set(req) != {"user", "password", "source"}:
        raise Refused("invalid", 'a request is {"user": ..., "password": ..., "source": ...} and nothing else')
    return (_text(req, "user", MAX_NAME, "a name"), _text(req, "password", MAX_PASSWORD, "a password"),
            _text(req, "source", MAX_SOURCE, "an address"))


def _shown(name: str) -> str:
    return name if len(name) <= 32 else f"{name[:16]}...({len(name)} chars)"


def pam_says_right(user: str, password: str) -> bool:
    import pamela  # only here: unit tests of the rest need no libpam

    try:
        # No pam_setcred (resetcred=0): credentials belong to a session, and the
        # user's session is their server's unit, not this process.
        pamela.authenticate(user, password, service=PAM_SERVICE, resetcred=0)
        pamela.check_account(user, service=PAM_SERVICE)
    except pamela.PAMError as e:
        log.warning("login refused for %r: %s", _shown(user), e)
        return False
    return True


class PasswordCheck:
    def __init__(self, allowed_uids: set[int], check: Callable[[str, str], bool] = pam_says_right,
                 clock: Callable[[], float] = time.monotonic):
        self.allowed_uids = allowed_uids
        self.check = check
        self.by_name = Attempts(PER_NAME, clock=clock)
        self.by_source = Attempts(PER_SOURCE, clock=clock)
        self.threads = asyncio.Semaphore(PAM_THREADS)

    async def answer(self, uid: int, line: bytes) -> dict[str, Any]:
        if uid not in self.allowed_uids:
            raise Refused("forbidden", f"uid {uid} may not ask for password checks")
        user, password, source = parse(line)
        wait = max(self.by_name.wait(user), self.by_source.wait(source))
        if wait > 0:
            log.warning("login refused for %r from %s: too many failed attempts", _shown(user), source)
            raise Refused("too_many", f"Too many failed logins; try again in {math.ceil(wait)} seconds.")
        tries = self.by_name.start(user), self.by_source.start(source)
        async with self.threads:
            right = await asyncio.to_thread(self.check, user, password)
        if right:
            self.by_name.forget(user)  # the owner proved it: their count starts over
            self.by_source.take_back(source, tries[1])
        else:
            log.warning("wrong password for %r from %s", _shown(user), source)
        return {"ok": True, "right": right}

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                uid = peer_uid(writer.get_extra_info("socket"))
                line = await asyncio.wait_for(reader.readline(), DEADLINE)
                if not line.endswith(b"\n"):
                    raise Refused("invalid", "a request is one line of JSON ending in a newline")
                reply = await self.answer(uid, line)
            except asyncio.TimeoutError:
                reply = _error(Refused("invalid", f"no complete request within {DEADLINE:g} s"))
            except ValueError:  # longer than the stream's limit
                reply = _error(Refused("invalid", f"a request is at most {MAX_LINE} bytes"))
            except Refused as e:
                reply = _error(e)
            writer.write(json.dumps(reply).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), DEADLINE)
        except (OSError, asyncio.TimeoutError) as e:
            log.info("client went away: %s", e)
        except Exception:  # our bug: keep serving the others
            log.exception("internal error")
        finally:
            writer.close()


def _error(e: Refused) -> dict[str, Any]:
    return {"ok": False, "error": {"code": e.code, "message": str(e)}}


async def amain() -> None:
    hub = hub_uid("jupyterhub-pam")
    service = PasswordCheck({0, hub})
    server = await asyncio.start_unix_server(service.serve_connection, sock=listening_socket("jupyterhub-pam", UNIT),
                                             limit=MAX_LINE)
    log.info("answering password checks for uid %d with PAM service %s", hub, PAM_SERVICE)
    async with server:
        await server.serve_forever()


def main() -> None:
    run(amain)


if __name__ == "__main__":
    main()
