"""Errors the user sees as one clear line (the CLI prints `error: <message>` and exits non-zero)."""


class RetrainerError(Exception):
    """Base class: an expected failure with a message fit for the user."""

    exit_code = 2


class ConfigError(RetrainerError):
    """Bad settings file, bad environment variable, bad option."""


class DataError(RetrainerError):
    """Unreadable, empty or malformed input data."""


class ValidationFailed(RetrainerError):
    """The data was readable but failed the Great Expectations gate."""

    exit_code = 3

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class RegistryError(RetrainerError):
    """Unknown version, illegal status change, corrupt registry."""


class RolloutError(RetrainerError):
    """Serving/rollout refused: target not kept, already production, endpoint problems."""


class UnknownVersion(RegistryError):
    """The version is not registered (or is not a valid semver string)."""


class IllegalTransition(RegistryError):
    """The lifecycle rules refuse this status change (e.g. a rejected version to production)."""


class ArtifactIntegrityError(RegistryError):
    """A version's artifacts are gone (cleaned by retention) or do not match their recorded
    sha256: refuse to load them."""


class CorruptRegistry(RegistryError):
    """The registry's index cannot be read."""
