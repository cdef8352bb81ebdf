"""The daemon serves no request before it has reconciled visitors with systemd
(issue 26, low): otherwise a visitor's spawn served meanwhile could have its new
home deleted by the cleaning of leftover homes."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
from pathlib import Path

from appliance import config
from appliance.daemon import server
from appliance.daemon.gpus import GpuManager
from appliance.gpu.inventory import Inventory

from .daemon_fakes import GPUS, FakeManager


def test_requests_wait_until_visitors_are_reconciled():
    async def scenario():
        d = server.Daemon(config.validate({"daemon": {"min_uid": 1}}), os.getuid(), FakeManager())
        d.spawns.gpus = GpuManager(d.systemd, inventory=lambda: Inventory(True, "550", GPUS))
        gate, order = asyncio.Event(), []

        async def reconcile_visitors():
            order.append("reconciling")
            await gate.wait()
            order.append("reconciled")

        async def apply_totals():
            return "slice left alone"

        d.spawns.reconcile_visitors, d.spawns.apply_totals = reconcile_visitors, apply_totals
        path = Path(tempfile.mkdtemp(prefix="d", dir="/tmp")) / "s"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.listen()  # as systemd hands it over: clients may connect at once
        starting = asyncio.create_task(server.start(d, sock))
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(json.dumps({"op": "list"}).encode() + b"\n")
        await writer.drain()
        while not order:
            await asyncio.sleep(0.01)
        try:
            await asyncio.wait_for(reader.read(1), 0.5)
            answered_early = True
        except asyncio.TimeoutError:
            answered_early = False
        gate.set()
        srv = await starting
        reply = json.loads(await asyncio.wait_for(reader.read(), 10))
        writer.close()
        srv.close()
        await srv.wait_closed()
        path.unlink()
        path.parent.rmdir()
        return answered_early, order, reply

    answered_early, order, reply = asyncio.run(scenario())
    assert not answered_early and order == ["reconciling", "reconciled"]
    assert reply["ok"] is True, reply
