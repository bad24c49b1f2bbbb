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


class ArtifactError(TorchrigError):
    """A model artifact is unusable: missing or corrupted file, bad manifest, pickle."""

    status_code = 500


class PackError(TorchrigError):
    """`torchrig pack` cannot turn the module into an artifact (export failed, bad input)."""

    status_code = 400


class RepositoryError(TorchrigError):
    """The model repository or a model's config.toml is invalid or unreachable."""

    status_code = 500


class EnvironmentMismatch(TorchrigError):
    """The artifact was exported in an environment that differs in a breaking way."""

    status_code = 500


class ModelNotFound(TorchrigError):
    """No such model, or no such version of it."""

    status_code = 404


class ModelNotReady(TorchrigError):
    """The model (version) exists but is not loaded and warmed up yet, or failed to load."""

    status_code = 503


class InvalidInput(TorchrigError):
    """A request's inputs do not match the model's signature."""

    status_code = 400


class InputRejected(InvalidInput):
    """The model raised on this request's inputs while it answered others: the inputs, not
    the model, are at fault (an index out of range, a value the model refuses)."""

    status_code = 400


class HeadersTooLarge(TorchrigError):
    """A request's header block is larger, or has more fields, than the server allows."""

    status_code = 431


class RequestTimeout(TorchrigError):
    """The client took longer than the server's read timeout to send its request."""

    status_code = 408


class PayloadTooLarge(TorchrigError):
    """A request body (after decompression) is larger than the server's body limit."""

    status_code = 413


class QueueFull(TorchrigError):
    """The model's request queue is full; retry after `retry_after_s`."""

    status_code = 503

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(TorchrigError):
    """The request's deadline passed before its batch ran."""

    status_code = 504


class InsufficientMemory(TorchrigError):
    """Device memory ran out even for the smallest piece of a request (one row)."""

    status_code = 507


class DeviceUnhealthy(TorchrigError):
    """An error poisoned the device context (CUDA): this replica must be restarted."""

    status_code = 503


class Unauthorized(TorchrigError):
    """A management request without the right bearer token."""

    status_code = 401


class ManagementDisabled(TorchrigError):
    """The model management API is off (no token configured, or another control mode)."""

    status_code = 403


class InferenceFailed(TorchrigError):
    """The model failed, not its callers: it raised on every request it was given and on
    its own warm-up example, or it produced no output."""

    status_code = 500


class VerifyFailed(TorchrigError):
    """`torchrig verify`: outputs differ from the golden outputs beyond tolerance."""

    status_code = 500
    exit_code = 1
