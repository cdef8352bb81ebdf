"""appliance-app: runs a web app that can only listen on a TCP port ([apps.NAME] with
{port}, e.g. TensorBoard) so that no other local user can reach it.

This file runs in the user environment, inside a user's server (jupyter-server-proxy
starts it): scripts/stage-tree installs it there as bin/appliance-app. So it imports
nothing but the standard library.

    appliance-app --socket PATH --port N -- COMMAND...

It takes a user and network namespace of its own, in which only a loopback interface
exists, and starts COMMAND there, which listens on 127.0.0.1:N of that namespace: no
process outside it can connect there. Inside, the app's uid shows as 0 (root of that
namespace only: outside it is still the user's uid, with nothing more), so that it
may bind N below 1024 there. Once the
app answers, it listens on the unix socket PATH (jupyter-server-proxy's, in a 0700
directory of the server's private /tmp) and carries each connection to the app. The
app has no network beyond its own loopback.

Why not a TCP port on the machine: 127.0.0.1 is shared by every local account, and an
app like TensorBoard has no login of its own, so any local user could read another's.
The server's unit refuses to bind TCP ports (SocketBindDeny=) for that reason, except
N (below 1024, which no unprivileged uid may bind on the machine's own network).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import time

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
PR_SET_PDEATHSIG = 1
PROG = "appliance-app"


def say(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


def own_network() -> None:
    """A user namespace mapping only this uid and gid (to 0 inside), and a network
    namespace with its loopback up."""
    uid, gid = os.getuid(), os.getgid()
    if hasattr(os, "unshare"):
        os.unshare(CLONE_NEWUSER | CLONE_NEWNET)
    else:  # Python 3.11 (Debian 12)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, req + bytes(22))[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP) + bytes(22))


def die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def wait_answering(port: int, app: subprocess.Popen) -> bool:
    """Until the app accepts connections on its port (or it ends)."""
    while app.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def serve(path: str, port: int, app: subprocess.Popen) -> int:
    async def carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            app_reader, app_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pump(reader, app_writer), pump(app_reader, writer))
        app_writer.close()
        writer.close()

    if os.path.lexists(path):
        os.unlink(path)
    old = os.umask(0o077)
    try:
        server = await asyncio.start_unix_server(carry, path)
    finally:
        os.umask(old)
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: ended.done() or ended.set_result(None))

    async def watch() -> None:
        while app.poll() is None and not ended.done():
            await asyncio.sleep(0.5)
        if not ended.done():
            ended.set_result(None)

    watcher = asyncio.create_task(watch())
    async with server:
        await ended
    watcher.cancel()
    return app.returncode if app.returncode is not None else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="run a TCP-only web app in a network of its own")
    parser.add_argument("--socket", required=True, help="the unix socket to serve the app on")
    parser.add_argument("--port", type=int, required=True, help="the app's port inside its own network")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    try:
        own_network()
    except OSError as e:
        say(f"cannot give {command[0]} a network of its own ({e.strerror or e}): an app on {{port}} needs "
            "user namespaces, which this server may not make (visitors' servers in ephemeral mode)")
        return 1
    try:
        app = subprocess.Popen(command, preexec_fn=die_with_parent)
    except OSError as e:
        say(f"cannot start {command[0]}: {e.strerror or e}")
        return 1

    def stop(*_) -> None:
        app.terminate()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    if not wait_answering(args.port, app):
        say(f"{command[0]} ended with exit code {app.returncode} before it answered on its port {args.port}")
        return 1
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        code = asyncio.run(serve(args.socket, args.port, app))
    finally:
        if app.poll() is None:
            app.terminate()
            try:
                app.wait(10)
            except subprocess.TimeoutExpired:
                app.kill()
    return code


if __name__ == "__main__":
    sys.exit(main())
