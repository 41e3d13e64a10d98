"""USearch, imported the one safe way.

With usearch 2.26 and onnxruntime 1.32, importing usearch first makes a later
``import onnxruntime`` crash the process (segmentation fault), and a search process needs
both (the query's embedding): so onnxruntime is imported first, here, for every caller.
"""

from __future__ import annotations


def usearch_index():
    """The ``usearch.index`` module (``Index``, and ``search`` for exact brute force)."""
    import onnxruntime  # noqa: F401 - the order matters, see above
    import usearch.index

    return usearch.index
