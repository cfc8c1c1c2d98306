"""Test tooling that ships with zraft (floor L3): for tests and benchmarks, never a node.

- `history` records what concurrent clients invoked and saw;
- `linearizability` decides whether such a history of key-value operations could have
  come from a single, atomic register per key (`register_model`: what each operation
  does to a register; `order_search`: the Wing & Gong search; `failing_window`: the
  smallest window of operations that cannot be ordered);
- `cluster` runs a throw-away local cluster of `zraft-node` processes, stopped by PID.
"""
