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


class TrainingError(WiseftError, RuntimeError):
    """Training cannot go on (for example a non-finite loss); names the step."""


class RunInterrupted(Exception):
    """The run stopped on a signal (SIGTERM, pre-emption) after saving a checkpoint to resume from."""


def one_line(err: BaseException) -> str:
    """The message of ``err`` as one line.

    An error raised inside a DataLoader worker comes back with the worker's traceback appended to its message;
    the last line of that traceback holds the original message.
    """
    text = str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if "Original Traceback" in text:
        last = lines[-1]
        prefix = f"{type(err).__module__}.{type(err).__name__}: "
        return last.removeprefix(prefix).removeprefix(f"{type(err).__name__}: ")
    return lines[0] if len(lines) == 1 else " ".join(lines)
