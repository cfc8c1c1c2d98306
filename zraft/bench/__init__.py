"""Benchmarks that print figures (never pass/fail tests): `load` drives concurrent clients
(`zraft-client bench`), `snapshot` measures snapshot pauses (`python -m zraft.bench.snapshot`).
"""
