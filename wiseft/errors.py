"""Exception types that carry a one-line, user-facing message."""


class WiseftError(Exception):
    """Base class for errors that are the user's to fix (bad config, data or checkpoint).

    The entry points print ``str(err)`` as a single line and exit non-zero instead of a traceback.
    """


class ConfigError(WiseftError, ValueError):
    """A config value is invalid (names the key and the value)."""


class DataError(WiseftError, ValueError):
    """A dataset on disk is missing or malformed (names the path)."""


class CheckpointError(WiseftError, ValueError):
    """A checkpoint does not match the model or another checkpoint (names the key)."""
