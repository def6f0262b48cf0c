"""The one exception type for mistakes a user can fix, and the one way they are shown.

Anything raised as ``UserError`` reaches the terminal as a single ``error: ...`` line and exit
code 2, never as a traceback: the message must name the file, flag or value at fault.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A problem with the user's input (a path, a flag, a file) rather than a bug."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse reporting a bad flag in one line and exit code 2, like ``UserError``: argparse's
    own usage block before it would bury the line that names the flag (``--help`` shows it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def exit_with(error: BaseException, code: int = 2) -> NoReturn:
    message = str(error).strip().splitlines()
    print(f"error: {message[0] if message else type(error).__name__}", file=sys.stderr)
    for line in message[1:]:
        print(f"  {line}", file=sys.stderr)
    raise SystemExit(code)


def run_cli(main: Callable[[], T]) -> T:
    """Run an entry point, turning ``UserError`` (also when wrapped by a library) into one line."""
    try:
        return main()
    except UserError as error:
        exit_with(error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:  # libraries (jsonargparse, Lightning) sometimes wrap our errors
        cause = error.__cause__ or error.__context__
        while cause is not None:
            if isinstance(cause, UserError):
                exit_with(cause)
            cause = cause.__cause__ or cause.__context__
        raise
