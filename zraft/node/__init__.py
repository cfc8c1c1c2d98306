"""The node: one process, one `zmq.Poller` loop driving the Raft core, storage, transport
and state machine (`loop.Node`), with the collaborators it hands work to.
"""

from zraft.node.loop import Node

__all__ = ["Node"]
