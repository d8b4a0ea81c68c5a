"""How a client command ends when talking to the hub goes wrong: one line on stderr
and an exit status, never a traceback.

Every client command (``status``, ``panic``, ``monitor``, ``record …``) runs inside
:func:`hub_errors`, used as a decorator or a ``with`` block, so the hub being absent
(exit 1), refusing (exit 1, or 2 for the statuses a command counts as a bad request)
or answering in a shape no midihub hub sends (exit 1) reads the same everywhere.
Whatever the hub said is shown through :func:`~midihub.cli.printable.printable`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Collection, Iterator
from typing import NoReturn

import click

from midihub.cli.client import HubBadAnswer, HubRefused, HubUnreachable
from midihub.cli.printable import MESSAGE_WIDTH, printable

REFUSED = "the hub refused: {message} (HTTP {status})"
TOKEN_SOURCES = "--token, $MIDIHUB_TOKEN or [web] token in ./midihub.toml"


class CommandError(Exception):
    """A command cannot go on; the message is printable as it is, ``code`` is the exit
    status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def inert(text: object) -> str:
    """What the hub (or anyone at its address) says, as text that only prints."""
    return printable(text, MESSAGE_WIDTH)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


@contextlib.contextmanager
def hub_errors(refused: str = REFUSED, usage: Collection[int] = ()) -> Iterator[None]:
    """``refused`` words a refusal (``{message}``, ``{status}``); a refusal with a status
    in ``usage`` means the command asked for something wrong, exit 2.

    The commands index the hub's JSON as the API documents it; a ``KeyError`` or
    ``TypeError`` from that (an older hub, or something else at the address) is a bad
    answer, not a bug to print a traceback for.
    """
    try:
        yield
    except CommandError as error:
        _fail(str(error), error.code)
    except (HubUnreachable, HubBadAnswer) as error:
        _fail(str(error), 1)
    except HubRefused as error:
        message = refused.format(message=inert(error), status=error.status)
        if error.status == 401 and error.token is not None:
            message += f" (the token sent came from {inert(error.token.origin)})"
        elif error.status == 401:
            message += f"; give the hub's token with {TOKEN_SOURCES}"
        _fail(message, 2 if error.status in usage else 1)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        _fail(
            f"the hub's answer is not what this midihub expects "
            f"({type(error).__name__}: {inert(error)}); is the hub at that address a "
            "midihub of this version?",
            1,
        )
