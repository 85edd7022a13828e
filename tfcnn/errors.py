"""The one user-facing error type, the CLI wrapper that turns it into one line + exit 2, and the switch that
keeps native (C++) log lines off stderr so that such a line stays the only one."""
import argparse
import contextlib
import os
import sys


# "tfcnn COMMAND" while the `tfcnn` console script runs a command (tfcnn.cli), else None.
INVOKED_AS = None


class TfcnnError(Exception):
    """A user error: the message says what went wrong and how to fix it."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad flags as one line (not usage + message) and exits 2."""

    def __init__(self, *args, prog=None, **kwargs):
        # Run by the `tfcnn` console script (tfcnn.cli sets INVOKED_AS to "tfcnn COMMAND"), usage and
        # errors name the command the user typed rather than `python -m tfcnn.COMMAND`.
        if prog and INVOKED_AS and prog == f"python -m tfcnn.{INVOKED_AS.split()[-1]}":
            prog = INVOKED_AS
        super().__init__(*args, prog=prog, **kwargs)

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {printable(message)} (see --help)\n")
        sys.exit(2)


def printable(text):
    """`text` kept on one line: a newline or other control character (from a file name, a spec, a class name
    the user gave) shown as its Python escape, e.g. \\n."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _native_stderr_to_devnull():
    """Point fd 2 at /dev/null; returns a new descriptor of the stream it pointed at."""
    sys.stderr.flush()
    real, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    return real


@contextlib.contextmanager
def native_stderr_off():
    """Keep fd 2 off inside the block: TensorFlow's start-up notices and LiteRT's XNNPACK line are written by
    C++ (before absl logging is initialised, which TF_CPP_MIN_LOG_LEVEL does not silence). TFCNN_TF_LOGS=1
    shows them."""
    if os.environ.get("TFCNN_TF_LOGS"):
        yield
        return
    real = _native_stderr_to_devnull()
    try:
        yield
    finally:
        os.dup2(real, 2)
        os.close(real)


def native_stderr_off_from_now():
    """fd 2 (native logs) at /dev/null from now on, and Python's sys.stderr (tfcnn's messages, warnings,
    tracebacks) on the real stream; TFCNN_TF_LOGS=1 keeps both."""
    if not os.environ.get("TFCNN_TF_LOGS"):
        sys.stderr = os.fdopen(_native_stderr_to_devnull(), "w", buffering=1)


def run_cli(main, argv=None):
    """Run `main(argv)`; a TfcnnError becomes one line on stderr and exit status 2."""
    try:
        return main(argv)
    except TfcnnError as exc:
        sys.stderr.write(f"error: {printable(str(exc))}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as cat does. Point stdout at devnull so
        # the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
