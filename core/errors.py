"""Errors meant for the user: the CLI prints their message on one line and exits non-zero."""


class PipelineError(Exception):
    """Bad input or an environment problem the user can fix. The message names the fix."""

    exit_code = 2
    label = "error"  # how the CLI's one line starts
    # Set on processes other than rank 0 when every process stops alike (Ctrl-C, a NaN):
    # torchrun's output then holds the message once.
    quiet = False


class PlatformUnsupported(PipelineError):
    """The step needs a platform this machine is not (Core ML prediction off macOS, say)."""

    exit_code = 3


class StorageError(PipelineError):
    """The file system refused a write (no permission, read-only): not the input's fault, and not a
    converter's either, so a benchmark stops instead of recording the row as unavailable."""


class DiskFull(StorageError):
    """No space (or quota) left where a file was being written."""


def first_line(e: BaseException) -> str:
    """`Type: first line of the message`: converters raise pages; a table row keeps one line."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__

