"""The one exception hierarchy of torchrig.

Every error a user can cause carries the HTTP status the server answers with and
the exit code the CLI ends with, so both front ends report it the same way.
Messages name the problem and the fix.
"""

from __future__ import annotations


class TorchrigError(Exception):
    """Root of every error torchrig raises on purpose."""

    status_code: int = 500
    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(TorchrigError):
    """A command-line argument or option is invalid."""

    status_code = 400


class ConfigError(TorchrigError):
    """A settings value (flag, TORCHRIG_* variable or config file) is invalid."""

    status_code = 400


class SnapshotError(TorchrigError):
    """A facts snapshot file is missing, truncated, not JSON or of another schema."""

    status_code = 400


class KnowledgeBaseError(TorchrigError):
    """The compatibility knowledge base's data files are inconsistent (a packaging bug)."""

    status_code = 500


class UnknownVersionError(TorchrigError):
    """A torch, CUDA or driver version string cannot be parsed."""

    status_code = 400
