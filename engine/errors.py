"""The engine's one exception hierarchy.

Every error that concerns an input file names the file and the problem, so an operator
reading the registry's ``last_error`` column knows what to look at without a traceback.
"""


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class ConfigError(EngineError):
    """A configuration key or value is invalid (the message names both)."""


class InputFileError(EngineError):
    """An input file is unusable. Quarantine it; other observations go on."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # Ray pickles task errors: keep (path, problem)
        return (self.__class__, (self.path, self.problem))


class FileNotReadyError(InputFileError):
    """A file still being written (size changing or HDF5 not yet openable): look again later."""


class ObservationError(EngineError):
    """The files of one observation do not fit together (shapes, times, pointing)."""


class TransientError(EngineError):
    """A failure worth retrying as it is (an I/O error on a shared file system, a registry
    briefly locked). Ray retries tasks that raise it (``ray.retries.<step>`` times)."""


class RegistryError(EngineError):
    """The registry refused an operation (unknown row, lease held by someone else)."""


class IllegalTransition(RegistryError):
    """A state change the state machine does not allow."""


class RegistryLocked(RegistryError, TransientError):
    """Another process held the registry's write lock longer than the busy timeout."""


class PathSafetyError(EngineError):
    """A path escapes its root (``..``, absolute elsewhere, or a symlink out)."""


class StaleProductError(EngineError):
    """A path the registry or a manifest hands out does not match what is on disk."""


class CasaTaskError(EngineError):
    """A CASA task failed or produced no output."""


class StorageError(EngineError):
    """Writing to stage or products failed (disk full, read-only). Retried on a later run."""


# Errors that say the INPUT is bad: the observation is quarantined (a rerun will not help).
# Every other failure leaves it 'failed', and a later run retries it (driver.max_attempts).
BAD_INPUT = (InputFileError, ObservationError, PathSafetyError)


class SourceFindingError(EngineError):
    """The source finder failed on an image (the image stands; the reason is recorded)."""
