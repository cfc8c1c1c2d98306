"""`probe_status`: ask every node for its `status` at once, each individually, never retried.

A status table (`zraft-client status`) needs each node's own view and must not wait a
full client timeout per dead node, so this is not a `Client` request: one REQ socket per
endpoint, every request sent at once, all of them polled together until one overall
deadline. What it shares with the client: the endpoint rule (`check_endpoint`), how a
socket monitor's refused handshake is read (`zraft.client.monitor`) and how an attempt
without a reply is described (`NoReply`). It must not retry, fail over or keep sockets.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import zmq

from zraft import wire
from zraft.client import monitor
from zraft.client.policy import NoReply, check_endpoint
from zraft.client.reply import Reply, StatusProbe
from zraft.net.security import ClientCurve


def probe_status(
    endpoints: Sequence[str],
    *,
    timeout: float = 1.0,
    context: zmq.Context[Any] | None = None,
    curve: ClientCurve | None = None,
) -> list[StatusProbe]:
    """Ask every endpoint for its `status` at once and wait at most `timeout` in all.

    Unlike `Client.status`, which asks whichever node answers, this asks each node
    individually and never retries: a node that does not answer in time is unreachable,
    and one that refuses the security handshake says so at once (`problem` starts with
    "refused: ").

    Returns:
        One probe per endpoint, in the order given.

    Raises:
        ValueError: a malformed endpoint.
    """
    for endpoint in endpoints:
        check_endpoint(endpoint)
    own = context is None
    ctx: zmq.Context[Any] = zmq.Context() if context is None else context
    frame = wire.encode_request("status")
    sockets: dict[zmq.Socket[bytes], str] = {}
    monitors: dict[zmq.Socket[bytes], zmq.Socket[bytes]] = {}  # monitor -> its socket
    results: dict[str, StatusProbe] = {}
    try:
        poller = zmq.Poller()
        for endpoint in dict.fromkeys(endpoints):
            sock = ctx.socket(zmq.REQ)
            sock.linger = 0
            sockets[sock] = endpoint
            if curve is not None:
                curve.apply(sock, endpoint)
            monitor_sock = sock.get_monitor_socket(monitor.MONITOR_EVENTS)
            monitors[monitor_sock] = sock
            sock.connect(endpoint)
            sock.send(frame, zmq.NOBLOCK)
            poller.register(sock, zmq.POLLIN)
            poller.register(monitor_sock, zmq.POLLIN)
        began = time.monotonic()
        deadline = began + timeout
        while len(results) < len(sockets):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for ready, _ in poller.poll(max(1, int(remaining * 1000))):
                if ready in monitors:
                    event = monitor.read_event(ready)
                    endpoint = sockets[monitors[ready]]
                    if monitor.is_final(event, curve is not None) and endpoint not in results:
                        problem = NoReply.refused(monitor.HANDSHAKE_EVENTS[event]).text
                        results[endpoint] = StatusProbe(endpoint, None, problem)
                        poller.unregister(monitors[ready])  # its socket: no late reply
                    continue
                endpoint = sockets[ready]
                poller.unregister(ready)
                try:
                    reply = Reply.from_map(wire.decode_reply(ready.recv(zmq.NOBLOCK)), endpoint)
                    results[endpoint] = StatusProbe(
                        endpoint, reply, took_s=time.monotonic() - began
                    )
                except wire.DecodeError as exc:
                    problem = NoReply.malformed(exc.reason).text
                    results[endpoint] = StatusProbe(endpoint, None, problem)
    finally:
        for sock in sockets:
            sock.disable_monitor()
        for monitor_sock in monitors:
            monitor_sock.close(linger=0)
        for sock in sockets:
            sock.close(linger=0)
        if own:
            ctx.term()
    # The probes share one overall wait, so the text names it as given (not per attempt).
    missing = f"no reply within {timeout:g} s"
    return [results.get(e) or StatusProbe(e, None, missing) for e in endpoints]
