"""Test tooling that ships with zraft: operation histories and a linearizability checker.

`zraft.testing.history` records what concurrent clients invoked and saw;
`zraft.testing.linearizability` decides whether such a history of key-value operations
could have come from a single, atomic register per key.
"""
