"""The paper's analyses: language-agnosticism of LM representations and the language of generated answers.

Submodules import numpy/sklearn/torch/lingua; this package stays light so `langbridge --help` is fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "retrieval_accuracy": "representations",
    "language_silhouette": "representations",
    "pca_2d": "representations",
    "load_flores": "representations",
    "langbridge_representations": "representations",
    "lm_representations": "representations",
    "analyze_representations": "representations",
    "OutputLanguageIdentifier": "output_language",
    "analyze_output_language": "output_language",
    "read_predictions": "output_language",
    "clean_for_identification": "output_language",
    "resolve_language": "languages",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
