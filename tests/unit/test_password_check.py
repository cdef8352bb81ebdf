"""jupyterhub-pam's rules, with a stand-in for PAM: who may ask, what a request may
hold, and how failed attempts are limited. PAM itself is exercised on the booted
appliance (tests/system/test_5_password.py)."""

from __future__ import annotations

import asyncio
import json

import pytest

from appliance import password_check as pc

HUB = 999


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def service(passwords: dict[str, str], clock: Clock | None = None) -> pc.PasswordCheck:
    return pc.PasswordCheck({0, HUB}, check=lambda u, p: passwords.get(u) == p, clock=clock or Clock())


def ask(svc, user="alice", password="right", source="10.0.0.1", uid=HUB) -> dict:
    line = json.dumps({"user": user, "password": password, "source": source}).encode() + b"\n"
    return asyncio.run(svc.answer(uid, line))


def test_right_and_wrong_passwords():
    svc = service({"alice": "right"})
    assert ask(svc) == {"ok": True, "right": True}
    assert ask(svc, password="wrong") == {"ok": True, "right": False}
    assert ask(svc, user="bob") == {"ok": True, "right": False}


def test_only_root_and_the_hub_may_ask():
    with pytest.raises(pc.Refused, match="uid 1000 may not") as e:
        ask(service({"alice": "right"}), uid=1000)
    assert e.value.code == "forbidden"


@pytest.mark.parametrize("request_, says", [
    (b"not json\n", "one line of JSON"),
    (b"[]\n", "nothing else"),
    (json.dumps({"user": "a", "password": "b"}).encode(), "nothing else"),
    (json.dumps({"user": "a", "password": "b", "source": "s", "extra": 1}).encode(), "nothing else"),
    (json.dumps({"user": "", "password": "b", "source": "s"}).encode(), "'user' must be a name of 1 to 256"),
    (json.dumps({"user": "a" * 257, "password": "b", "source": "s"}).encode(), "'user' must be a name"),
    (json.dumps({"user": 5, "password": "b", "source": "s"}).encode(), "'user' must be a name"),
    (json.dumps({"user": "a\nb", "password": "b", "source": "s"}).encode(), "control characters"),
    (json.dumps({"user": "a", "password": "b\0c", "source": "s"}).encode(), "control characters"),
    (json.dumps({"user": "a", "password": "b" * 4097, "source": "s"}).encode(), "'password' must be a password"),
    (json.dumps({"user": "a", "password": "b", "source": "s" * 101}).encode(), "'source' must be an address"),
])
def test_bad_requests_are_refused_before_pam(request_, says):
    asked = []
    svc = pc.PasswordCheck({HUB}, check=lambda u, p: asked.append(u) or True)
    with pytest.raises(pc.Refused, match=says) as e:
        asyncio.run(svc.answer(HUB, request_))
    assert e.value.code == "invalid" and asked == []


def test_a_name_gets_five_tries_per_window_then_waits_even_with_the_right_password():
    clock = Clock()
    svc = service({"alice": "right"}, clock)
    for _ in range(pc.PER_NAME):
        assert ask(svc, password="guess", source=f"10.0.0.{_}")["right"] is False
    with pytest.raises(pc.Refused, match=r"Too many failed logins; try again in 300 seconds") as e:
        ask(svc)
    assert e.value.code == "too_many"
    assert ask(svc, user="bob", password="x")["right"] is False  # other names are not held up
    clock.now += 299
    with pytest.raises(pc.Refused, match="try again in 1 seconds"):
        ask(svc)
    clock.now += 1
    assert ask(svc)["right"] is True


def test_a_right_password_starts_the_count_over():
    svc = service({"alice": "right"})
    for _ in range(pc.PER_NAME - 1):
        ask(svc, password="typo")
    assert ask(svc)["right"] is True
    for _ in range(pc.PER_NAME - 1):
        ask(svc, password="typo")
    assert ask(svc)["right"] is True


def test_one_source_gets_thirty_tries_over_all_names():
    svc = service({"alice": "right"})
    for i in range(pc.PER_SOURCE):
        ask(svc, user=f"user{i}", password="guess", source="203.0.113.9")
    with pytest.raises(pc.Refused, match="Too many failed logins"):
        ask(svc, source="203.0.113.9")
    assert ask(svc, source="198.51.100.1")["right"] is True


def test_guesses_sent_at_once_count_before_pam_answers():
    """Many connections at once for one name: only PER_NAME reach PAM."""
    asked = []

    def slow_pam(user, password):
        asked.append(password)
        import time
        time.sleep(0.05)
        return False

    svc = pc.PasswordCheck({HUB}, check=slow_pam)

    async def flood():
        lines = [json.dumps({"user": "alice", "password": f"g{i}", "source": f"s{i}"}).encode() + b"\n"
                 for i in range(20)]
        return await asyncio.gather(*(svc.answer(HUB, line) for line in lines), return_exceptions=True)

    replies = asyncio.run(flood())
    assert len(asked) == pc.PER_NAME
    assert sum(isinstance(r, pc.Refused) and r.code == "too_many" for r in replies) == 20 - pc.PER_NAME


def test_memory_stays_bounded_by_expiring_old_keys():
    clock = Clock()
    attempts = pc.Attempts(limit=5, clock=clock)
    for i in range(pc.MAX_KEYS + 1):
        attempts.start(f"name{i}")
    clock.now += pc.WINDOW + 1
    attempts.start("late")
    assert list(attempts.times) == ["late"]


def test_served_over_a_unix_socket_one_answer_per_line(tmp_path):
    """The connection handler: peer credentials from the kernel, errors as replies."""
    path = str(tmp_path / "pam.sock")
    import os
    svc = pc.PasswordCheck({os.getuid()}, check=lambda u, p: p == "right")

    async def run():
        server = await asyncio.start_unix_server(svc.serve_connection, path=path, limit=pc.MAX_LINE)
        async with server:
            out = []
            for raw in (json.dumps({"user": "a", "password": "right", "source": "x"}).encode() + b"\n",
                        b"{}\n", b"x" * (pc.MAX_LINE + 10) + b"\n"):
                r, w = await asyncio.open_unix_connection(path)
                w.write(raw)
                await w.drain()
                out.append(json.loads(await r.readline()))
                w.close()
            return out

    right, empty, huge = asyncio.run(run())
    assert right == {"ok": True, "right": True}
    assert empty["error"]["code"] == "invalid"
    assert huge["error"] == {"code": "invalid", "message": f"a request is at most {pc.MAX_LINE} bytes"}
