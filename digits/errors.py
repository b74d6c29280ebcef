"""Errors a user can act on, each with the documented exit code (docs/architecture.md)."""

from __future__ import annotations

import errno

# Outcomes that are no error, so no exception carries their codes.
EXIT_REJECTED = 3  # the gate rejected the model; the registry is unchanged
EXIT_ABORTED = 130  # Ctrl-C, as a shell reports SIGINT


class DigitsError(Exception):
    """Base class: a one-line message for the user and the process exit code."""

    exit_code = 1


class UsageError(DigitsError):
    """A bad flag or value."""

    exit_code = 2


class DataError(DigitsError):
    """Input data missing, corrupt or failing validation; nothing was written."""

    exit_code = 4


class SourceUnavailable(DataError):
    """The data source could not be reached (npm failed); worth retrying, unlike a bad file."""


class ValidationFailed(DataError):
    """The data was read but failed its Great Expectations suite."""


class ExportError(DigitsError):
    """A SavedModel or ONNX export failed or disagrees with the Keras model; nothing published.

    Exit code 1: the model and data were fine, so it is a bug to report, not a user error.
    """

    exit_code = 1


class RegistryError(DigitsError):
    """Registry integrity: checksum mismatch, bad manifest, unknown or unsafe ref."""

    exit_code = 5


class RegistryBusy(DigitsError):
    """Another writer held the registry lock for longer than we were willing to wait."""

    exit_code = 6


class EnvironmentFault(DigitsError):
    """A file or folder could not be read or written (permission, read-only, disk full):
    the machine's doing, not the input's and not a bug. Registry writes it interrupts are
    undone, or reported as pending where they cannot be (digits.registry.aliases)."""

    exit_code = 7


# What the OS says when the machine, not the code, is at fault (main maps these to exit 7).
ENVIRONMENT_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}
)


def environment_fault(error: OSError) -> EnvironmentFault | None:
    """The one-line EnvironmentFault for an OSError that is the environment's, else None."""
    if error.errno not in ENVIRONMENT_ERRNOS:
        return None
    where = error.filename if error.filename is not None else "a file"
    if error.filename2 is not None:
        where = f"{where} -> {error.filename2}"
    return EnvironmentFault(
        f"{where}: {error.strerror} (an environment error: check permissions, free space "
        "and read-only mounts)"
    )
