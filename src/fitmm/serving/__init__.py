"""Serving: exports of trained runs (plain files) and the HTTP service that answers from them.

Part of the interfaces layer. ``fitmm.serving.app`` and ``fitmm.serving.index`` never import model
code: a server needs only an export folder (``fitmm.serving.export``).
"""

DEFAULT_HNSW = {"M": 32, "ef_construction": 200, "ef_search": 256}
"""The HNSW parameters an export records unless told otherwise: links per node, build breadth,
search breadth."""
