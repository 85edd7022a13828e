"""The one user-facing error type and the CLI wrapper that turns it into one line + exit 2."""
import argparse
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
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def run_cli(main, argv=None):
    """Run `main(argv)`; a TfcnnError becomes one line on stderr and exit status 2."""
    try:
        return main(argv)
    except TfcnnError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as cat does. Point stdout at devnull so
        # the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
