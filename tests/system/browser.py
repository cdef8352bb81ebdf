"""What a browser does with the hub, over plain HTTP: the login form with its _xsrf
token, the redirects of the spawn and of the OAuth handshake with the user's server,
and a kernel driven over its websocket, as JupyterLab drives it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


class Browser:
    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")
        self.s = requests.Session()

    def get(self, path: str, **kw) -> requests.Response:
        return self.s.get(self.base + path, timeout=kw.pop("timeout", 60), **kw)

    def login(self, username: str, password: str) -> requests.Response:
        """Submit the login form; returns the page we end up on, redirects followed."""
        page = self.get("/hub/login")
        page.raise_for_status()
        m = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text)
        assert m, "the login form has no _xsrf field"
        return self.s.post(self.base + "/hub/login?next=", timeout=120, data={
            "_xsrf": m.group(1), "username": username, "password": password})

    def login_and_start(self, username: str, password: str) -> requests.Response:
        """Log in; if the spawn form shows (GPUs visible, e.g. the GPU tests' fake NVML
        left behind), start a server without GPU, as a CPU-only user would."""
        page = self.login(username, password)
        if 'id="spawn_form"' in page.text:
            page = self.spawn_with_form(username, {"gpus": "0"})
        return page

    def hub_xsrf(self) -> dict[str, str]:
        token = self.s.cookies.get("_xsrf", path="/hub/")
        return {"X-XSRFToken": token} if token else {}

    def spawn_with_form(self, username: str, fields: dict[str, str]) -> requests.Response:
        """Submit the spawn form as the page does, with the page's xsrf token."""
        form = self.get("/hub/spawn")
        m = re.search(r'xsrf_token: "([^"]+)"', form.text)
        assert m and 'id="spawn_form"' in form.text, f"no spawn form: {form.status_code} {form.url}"
        # The form's action URL carries the token (?_xsrf=...), the body only the fields.
        return self.s.post(f"{self.base}/hub/spawn/{username}", params={"_xsrf": m.group(1)}, data=fields,
                           timeout=120, allow_redirects=False)

    def spawn_outcome(self, username: str, timeout: float = 120) -> tuple[bool, list[str]]:
        """Read the spawn's progress events until ready or failed: (ready, messages)."""
        deadline = time.monotonic() + timeout
        messages: list[str] = []
        while time.monotonic() < deadline:
            with self.s.get(f"{self.base}/hub/api/users/{username}/server/progress", stream=True, timeout=timeout,
                            headers={**self.hub_xsrf(), "Accept": "text/event-stream"}) as r:
                if r.status_code != 200:
                    time.sleep(0.2)
                    continue
                for line in r.iter_lines(decode_unicode=True):
                    if line and line.startswith("data:"):
                        event = json.loads(line[5:])
                        messages.append(event.get("message", ""))
                        if event.get("ready"):
                            return True, messages
                        if event.get("failed"):
                            return False, messages
        raise AssertionError(f"no outcome of {username}'s spawn in {timeout} s: {messages}")

    def progress_until(self, username: str, text: str, timeout: float = 120) -> list[str]:
        """Read the spawn's progress events until one contains `text`; the messages so far."""
        deadline = time.monotonic() + timeout
        messages: list[str] = []
        while time.monotonic() < deadline:
            messages = []
            with self.s.get(f"{self.base}/hub/api/users/{username}/server/progress", stream=True, timeout=timeout,
                            headers={**self.hub_xsrf(), "Accept": "text/event-stream"}) as r:
                if r.status_code == 200:
                    for line in r.iter_lines(decode_unicode=True):
                        if line and line.startswith("data:"):
                            messages.append(json.loads(line[5:]).get("message", ""))
                            if text in messages[-1]:
                                return messages
            time.sleep(0.5)
        raise AssertionError(f"{username}'s spawn never said {text!r} in {timeout} s: {messages}")

    def wait_for_server(self, username: str, timeout: float = 120, interval: float = 0.5) -> requests.Response:
        """Follow /user/NAME/lab through the OAuth redirects until the server answers."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.get(f"/user/{username}/lab")
            if r.status_code == 200 and f"/user/{username}/" in r.url and "jupyterlab" in r.text.lower():
                return r
            if time.monotonic() > deadline:
                raise AssertionError(f"{username}'s server did not answer in {timeout} s: {r.status_code} {r.url}")
            time.sleep(interval)

    def api_status(self, username: str) -> requests.Response:
        return self.get(f"/user/{username}/api/status", allow_redirects=False)

    def _xsrf_headers(self, username: str) -> dict[str, str]:
        # The hub and the user's server each set their own _xsrf cookie, by path.
        token = self.s.cookies.get("_xsrf", path=f"/user/{username}/")
        return {"X-XSRFToken": token} if token else {}

    def start_kernel(self, username: str) -> str:
        r = self.s.post(f"{self.base}/user/{username}/api/kernels", json={"name": "python3"},
                        headers=self._xsrf_headers(username), timeout=60)
        assert r.status_code == 201, f"kernel start: {r.status_code} {r.text[:300]}"
        return r.json()["id"]

    def execute(self, username: str, kernel_id: str, code: str, timeout: float = 60) -> str:
        """Run code in the kernel over a fresh websocket; return what it printed or returned."""
        async def go() -> str:
            async with await self.kernel_socket(username, kernel_id) as k:
                return await k.execute(code, timeout)
        return asyncio.run(go())

    async def kernel_socket(self, username: str, kernel_id: str) -> "KernelSocket":
        url = self.base.replace("http", "ws", 1) + f"/user/{username}/api/kernels/{kernel_id}/channels"
        cookie = "; ".join(f"{c.name}={c.value}" for c in self.s.cookies if c.path.startswith(f"/user/{username}"))
        headers = {"Cookie": cookie, **self._xsrf_headers(username)}
        if isinstance(self.s.auth, tuple):  # a site password in front (applctl proxy password)
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(self.s.auth).encode()).decode()
        # self.s.verify is False behind a self-signed certificate (tests/system/test_8_reverse_proxy.py)
        # 60 s, not tornado's 20: under qemu's emulator (tests/vm) the handshake took longer.
        ws = await websocket_connect(HTTPRequest(url, headers=headers, validate_cert=self.s.verify is not False,
                                                 connect_timeout=60, request_timeout=60))
        return KernelSocket(ws, username)


class KernelSocket:
    """One open kernel websocket, as a JupyterLab tab keeps it."""

    def __init__(self, ws, username: str):
        self.ws, self.username = ws, username

    async def __aenter__(self) -> "KernelSocket":
        return self

    async def __aexit__(self, *exc) -> None:
        """Close as a tab does, and wait until the server has closed too: else the
        TCP connection outlives the event loop (asyncio.run) until garbage collection,
        and a web server in front keeps a worker for it (Apache's reload then waits
        its 10 s for that worker to retire)."""
        self.ws.close()
        deadline = time.monotonic() + 5
        try:
            while time.monotonic() < deadline and await asyncio.wait_for(self.ws.read_message(),
                                                                         deadline - time.monotonic()) is not None:
                pass
        except (asyncio.TimeoutError, OSError):
            pass

    async def execute(self, code: str, timeout: float = 60) -> str:
        msg_id = uuid.uuid4().hex
        await self.ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "username": self.username, "session": uuid.uuid4().hex,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = await asyncio.wait_for(self.ws.read_message(), deadline - time.monotonic())
            if raw is None:
                raise ConnectionError("the kernel websocket was closed")
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "execute_result":
                out.append(msg["content"]["data"].get("text/plain", ""))
            elif kind == "error":
                out.append("ERROR: " + msg["content"]["ename"] + ": " + msg["content"]["evalue"])
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                break
        return "".join(out)


def login(app, name: str, password: str) -> Browser:
    """A Browser logged in as `name` on the appliance at app.url; the login must succeed."""
    b = Browser(app.url)
    r = b.login(name, password)
    assert r.status_code == 200, (r.status_code, r.url, r.text[:500])
    return b
