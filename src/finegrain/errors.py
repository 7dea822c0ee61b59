"""The one error root of finegrain.

Every error finegrain raises on purpose is a :class:`FinegrainError`. Each specific class also derives
from the builtin exception a caller would already catch (as scikit-learn's ``NotFittedError`` derives
from ``ValueError`` and ``AttributeError``), so ``except ValueError`` keeps working around finegrain
calls while ``except FinegrainError`` catches exactly what finegrain reports.

This module imports nothing heavy: the CLI and ``finegrain info`` use it without loading torch.
"""

from __future__ import annotations


class FinegrainError(Exception):
    """Root of every error finegrain raises on purpose; its text is one line meant for the user."""

    def __str__(self) -> str:
        # KeyError's str() quotes its message ("'unknown layer ...'"); ours always prints the plain text
        if len(self.args) == 1:
            return str(self.args[0])
        return super().__str__()


class ParameterError(FinegrainError, ValueError):
    """An argument or hyperparameter that is out of range, of the wrong type, or inconsistent."""


class ModelError(FinegrainError, ValueError):
    """Wrong model type, or a model that cannot be loaded or does not support the operation."""


class LayerError(ModelError, KeyError):
    """A layer (hook point) or neuron address that the model or the store does not have."""


class CorpusError(FinegrainError, ValueError):
    """A corpus file or corpus object that cannot be read or is inconsistent; names the file and line."""


class StoreError(FinegrainError, OSError):
    """An activation store that is missing, incomplete, damaged, locked, or lacks what is asked of it."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No activation store (complete or partial) at the given path."""


class NotFittedError(FinegrainError, ValueError, AttributeError):
    """An estimator used before ``fit`` (the same bases as scikit-learn's ``NotFittedError``)."""


class ConceptError(FinegrainError, ValueError):
    """A concept definition that matches nothing or cannot be built."""


class AlignmentError(FinegrainError, ValueError):
    """Two stores (or models) whose rows do not describe the same words."""


class AnnotationError(FinegrainError, RuntimeError):
    """The annotator (spaCy) is missing or failed."""


class DependencyError(FinegrainError, ImportError):
    """An optional dependency is not installed; the message says how to install it."""


__all__ = [
    "AlignmentError",
    "AnnotationError",
    "ConceptError",
    "CorpusError",
    "DependencyError",
    "FinegrainError",
    "LayerError",
    "ModelError",
    "NotFittedError",
    "ParameterError",
    "StoreError",
    "StoreNotFoundError",
]
