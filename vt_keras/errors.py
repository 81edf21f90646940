"""The one exception type for user mistakes.

A `UserError` carries a message that names the file, key or flag at fault,
what was expected and what was found. Binaries print it on one line and exit
with status 2; any other exception is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """A mistake in the user's input: a path, shape, key, flag or file."""


class DataError(UserError):
    """A data file that is missing, malformed or does not match the config."""


class ConfigError(UserError):
    """A config key, value or flag that is unknown or out of range."""


class CheckpointError(UserError):
    """A workdir whose checkpoint does not fit the model being built."""


class TrainingDiverged(UserError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class TrainingInterrupted(UserError):
    """Training stopped before its last step (SIGTERM, a lost worker); a checkpoint is kept to resume from."""


class ShapeError(UserError):
    """An input whose shape or structure does not fit the layer or loss it is given to."""
