"""Loaders: checkpoints into eval-mode CPU modules, data sources into checked pixel tensors."""

from __future__ import annotations

from robaudit.loading.data import DataSet, digits_arrays, load_data
from robaudit.loading.model import LoadedModel, build_arch, load_model, sha256_file

__all__ = [
    "DataSet",
    "LoadedModel",
    "build_arch",
    "digits_arrays",
    "load_data",
    "load_model",
    "sha256_file",
]
