"""The exceptions of wdb: one class per kind of error of the engine, all under `Error`.

The native module raises them by name, with the engine's message.
"""


class Error(Exception):
    """Any wdb error."""


class ConflictError(Error):
    """Another transaction committed a change to the same block (or to the same array's
    shape or catalog entry) after this transaction's snapshot. Retry the transaction."""


class NotFoundError(Error, KeyError):
    """A named array, snapshot or file does not exist (also a KeyError)."""

    def __str__(self):
        # KeyError shows the repr of its argument; show the message as is.
        return Exception.__str__(self)


class AlreadyExistsError(Error):
    """An array of that name already exists."""


class TypeMismatchError(Error, TypeError):
    """The array holds another element type than the one asked for."""


class OutOfRangeError(Error, IndexError):
    """An index, range, shape or size is outside what is allowed (also an IndexError)."""


class ReadOnlyError(Error):
    """A write to a read-only database or to an array of a snapshot."""


class CorruptionError(Error):
    """The file holds bytes that do not decode; the message names the file offset."""


class IoError(Error, OSError):
    """An operating-system I/O error."""


class RamExhaustedError(Error, MemoryError):
    """The RAM budget is used up by dirty blocks: commit, abort or raise ram_budget."""


class PoisonedError(Error):
    """A write or fsync failed earlier; the database refuses commits until reopened."""


class SnapshotGoneError(Error):
    """The snapshot asked for was dropped by compaction or never existed."""


class InvalidArgumentError(Error, ValueError):
    """A malformed argument: a bad name, option, shape or dtype (also a ValueError)."""


class BusyError(Error):
    """The operation cannot run now because of other work in flight."""


class LoadError(Error):
    """Loading a block failed; the message names the array, block and cause."""


class ClosedError(Error, ValueError):
    """The database, transaction or snapshot has been closed or has ended."""


__all__ = [
    "Error",
    "ConflictError",
    "NotFoundError",
    "AlreadyExistsError",
    "TypeMismatchError",
    "OutOfRangeError",
    "ReadOnlyError",
    "CorruptionError",
    "IoError",
    "RamExhaustedError",
    "PoisonedError",
    "SnapshotGoneError",
    "InvalidArgumentError",
    "BusyError",
    "LoadError",
    "ClosedError",
]
