"""Exceptions that cross module boundaries; the CLI turns each into one clear message.

One class per condition, all under DicomfsError, so callers can catch the
family and the CLI can map each to an exit code and a hint.
"""


class DicomfsError(Exception):
    """Base class of every error dicomfs reports to a user."""


class IndexUnavailableError(DicomfsError):
    """The index file does not exist or cannot be opened."""


class IndexCorruptError(DicomfsError):
    """The index exists but is unreadable or of another schema version; rebuild it."""


class UnknownUidError(DicomfsError):
    """A UID given on the command line is not in the index."""


class NotAPlanError(DicomfsError):
    """A UID given where a plan is expected names another kind of object."""


class SourceError(DicomfsError):
    """A source folder is missing or unreadable."""


class MountError(DicomfsError):
    """The mountpoint is unusable: missing, busy, or FUSE is unavailable."""


class ConfigError(DicomfsError):
    """A setting from flags, environment or the config file is invalid."""


class ExternalToolError(DicomfsError):
    """An optional program dicomfs runs (Graphviz's ``dot``) is not installed or failed."""


# Exit codes of every command (README "Commands"). They live here, beside the
# errors they answer, so each command module maps an error without importing
# the CLI.
EXIT_OK = 0
EXIT_ERROR = 1  # also: a fetch ran but something is still missing
EXIT_USAGE = 2
EXIT_UNKNOWN_UID = 3
EXIT_INDEX = 4
EXIT_SOURCE = 5
EXIT_MOUNT = 6

_EXIT_CODES: tuple[tuple[type[DicomfsError], int], ...] = (
    (UnknownUidError, EXIT_UNKNOWN_UID),
    (NotAPlanError, EXIT_UNKNOWN_UID),
    (IndexUnavailableError, EXIT_INDEX),
    (IndexCorruptError, EXIT_INDEX),
    (SourceError, EXIT_SOURCE),
    (MountError, EXIT_MOUNT),
    (ConfigError, EXIT_USAGE),
)


def exit_code(exc: DicomfsError) -> int:
    """The documented exit status for an error (1 for any not listed)."""
    return next((code for cls, code in _EXIT_CODES if isinstance(exc, cls)), EXIT_ERROR)
