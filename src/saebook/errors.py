"""Named exceptions of saebook. Each subclasses the built-in a caller would expect."""

from __future__ import annotations

__all__ = ["SaebookError", "UnknownProfileError", "HubUnavailableError", "MissingArtifactError"]


class SaebookError(Exception):
    """Base class of every error saebook raises on purpose."""


class UnknownProfileError(SaebookError, ValueError):
    """A profile name that is not one of the defined profiles."""


class HubUnavailableError(SaebookError, ConnectionError):
    """A hub profile was asked for on a machine that cannot reach the Hugging Face hub."""


class MissingArtifactError(SaebookError, FileNotFoundError):
    """A shipped file (model, SAE, tokenizer) is missing or unreadable."""
