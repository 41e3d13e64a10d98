"""Shared fixtures. ``tiny_model_dir``: a directory holding the tiny test model."""

from __future__ import annotations

import pytest

from tiny_model import make_tiny_model


@pytest.fixture
def tiny_model_dir(tmp_path_factory):
    """A fresh directory with ``model.onnx`` + ``tokenizer.json`` of the tiny model (dim 8)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))
