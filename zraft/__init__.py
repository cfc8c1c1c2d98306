"""zraft: a Raft-replicated, linearizable key-value store over ZeroMQ."""

__version__ = "0.1.0"
