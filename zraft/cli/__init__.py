"""Command-line entry points: zraft-node and zraft-client."""
