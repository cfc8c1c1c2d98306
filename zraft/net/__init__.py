"""The network floor: ZeroMQ sockets (`transport`), CURVE keys and roles (`security`), the
in-loop ZAP handler (`zap`) and the test-only fault hooks (`faults`).

Nothing here knows a message format: frames are opaque bytes (`zraft.wire` gives them
meaning, and only the node joins the two).
"""
