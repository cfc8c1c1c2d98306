"""The replicated state machine: what a committed log entry means.

Floor L0 beside `zraft.core`: `kv` is pure (no I/O, no clock, no randomness, no msgpack),
so every replica that applies the same log ends in the same state with the same replies.
"""
