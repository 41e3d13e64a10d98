"""Embedding texts: the model registry, the ONNX Runtime encoder and its int8 rewrite, and the
content-addressed cache that makes every re-embedding incremental.

Nothing here is imported when doit merely loads or lists tasks, except :mod:`.models` (no
numerical imports at module level).
"""
