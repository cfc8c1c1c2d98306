"""Integration tests: real `bin/zraft-node` processes (layer 6 of STYLE.md B7)."""
