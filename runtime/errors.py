"""The runtime's error types, in a module of their own so that every runtime module (and the
exporter) can raise them without importing the backends."""

from __future__ import annotations


class BackendError(RuntimeError):
    """The model cannot be opened here: bad artefact, missing library or device, refused engine.

    The message is one line that names the file and the problem."""


class MetadataError(BackendError, ValueError):
    """An artefact's ``dbsi.*`` metadata or sidecar is missing or describes something this
    toolkit cannot feed. A ValueError too, since the exporter treats it as bad input."""
