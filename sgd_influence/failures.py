"""How a run ends when something goes wrong: one line. Errors in the input keep their
own exception and message; anything else a task raises becomes :class:`TaskFailed`
"<task> failed: <error>"; Ctrl-C, even when it comes out of nnabla as another error, is
a KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib

from . import fileio

USER_ERRORS = (ValueError, FileNotFoundError, KeyError, FloatingPointError)


class TaskFailed(RuntimeError):
    """A task failed for a reason other than bad input; the message is one line."""


def one_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def interrupted(exc: BaseException | None) -> bool:
    """Whether ``exc`` is Ctrl-C or an error it caused. Ctrl-C that lands while nnabla's C++
    code calls back into Python (its backward functions written in Python) comes out as
    SystemError "... returned a result with an exception set", with the KeyboardInterrupt
    as its cause or context."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def as_interrupt():
    """Raise an error that Ctrl-C caused as the KeyboardInterrupt it is."""
    try:
        yield
    except Exception as exc:
        if interrupted(exc):
            raise KeyboardInterrupt from exc
        raise


def failure(label: str, exc: BaseException) -> BaseException:
    """The exception the failed task ``label`` ends the run with (bad input keeps its own)."""
    if isinstance(exc, (*USER_ERRORS, fileio.WriteError)):
        return exc
    return TaskFailed(f"{label} failed: {type(exc).__name__}: {one_line(exc)}")
