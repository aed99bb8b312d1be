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
