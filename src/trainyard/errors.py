"""The errors a user can cause, one class per area, all under TrainyardError.

Each message names what was wrong, where, and what to do; the CLI prints it without a traceback.
"""


class TrainyardError(Exception):
    """Base of every error trainyard raises on purpose."""


class ConfigError(TrainyardError, ValueError):
    """An experiment file (or other config) is invalid; one line per problem."""

    def __init__(self, problems: list[str], source: str = "experiment file") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} is invalid ({len(problems)} problem(s)):\n{lines}")


class DataError(TrainyardError):
    """Input data is missing, unreadable or does not match the expected schema."""


class ModelError(TrainyardError):
    """A model cannot be found, imported or built."""


class CheckpointError(TrainyardError):
    """A checkpoint is missing, truncated or does not match the model."""


class ExecutorError(TrainyardError):
    """A worker could not be started, or died in a way the executor reports."""


class NotFoundError(TrainyardError, LookupError):
    """An experiment, trial or checkpoint that the user named does not exist."""


class AuthenticationError(TrainyardError):
    """A request carries no credential, or one the Master does not accept (HTTP 401)."""


class PermissionDeniedError(TrainyardError):
    """A valid credential asks for something it may not reach (HTTP 403)."""


class ServiceUnavailableError(TrainyardError):
    """Something the Master depends on (the identity provider) cannot be reached (HTTP 503)."""


class ExportError(TrainyardError):
    """A trained model cannot be written in another format (ONNX for CMSSW)."""


class QuotaExceededError(TrainyardError):
    """A project's quota or disk cap refuses a submission (HTTP 409): which quota, the current
    use and the limit."""
