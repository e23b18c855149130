"""One lifecycle for every client: start the runtime, run the body, close by policy, map errors.

``open_consumer`` and ``open_producer`` are both::

    async with run_client("consumer", start, close, close_timeout) as client:
        yield client

The client's actors run in a task group of their own (the *runtime*), in a
task beside the body, not around it. An actor that fails does not cancel the
application's code: its error is recorded, the other actors stop, their
channels close, and the application's next call into the client raises that
error (a real one, with its cause chained), as trio's ``BrokenResourceError``
would. ``ClosedError`` means only what it says: *you* closed the client.

Leaving the block:

- the body's own exception (KeyboardInterrupt and cancellation included)
  leaves as itself, never inside an exception group; closing runs first,
  under a shielded ``close_timeout``, and is told what the body raised, so
  that it can choose its policy (a consumer then commits less);
- a body that ended normally gets the close's error, or else the runtime's
  error if the runtime died and no call reported it yet;
- errors from the task group become one meaningful error
  (``_errors.raise_as_one``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.abc

from ._errors import ClosedError, raise_as_one

__all__ = ["Runtime", "run_client"]

C = TypeVar("C")

_log = logging.getLogger("streamhouse.lifecycle")


class Runtime:
    """The actors of one client: their task group, and how they ended.

    The facade keeps a reference to answer one question when a channel into
    the runtime breaks: what to raise (:meth:`broken`). The runtime's error
    is written once, by the task of the actor that failed, before any other
    task runs, so the facade always finds it when it looks.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._tg: anyio.abc.TaskGroup | None = None
        self._error: Exception | None = None
        self._reported = False
        self._closed = False

    @property
    def task_group(self) -> anyio.abc.TaskGroup:
        """Where the client's actors and helper tasks run."""
        if self._tg is None:
            raise ClosedError(f"the {self.name} is closed")
        return self._tg

    @property
    def alive(self) -> bool:
        return self._tg is not None and self._error is None

    def fail(self, error: Exception) -> None:
        """Record the first real error and stop every actor (not the body).

        An actor's own task group fails with a group: its first error is
        the one that counts (the rest followed from it).
        """
        if isinstance(error, BaseExceptionGroup):
            error = _first(error)
        if self._error is None and not self._closed:
            self._error = error
            _log.error("the %s's runtime stopped: %r", self.name, error)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def stop(self) -> None:
        """The client is closed: stop every actor; from now on, calls raise ClosedError."""
        self._closed = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def broken(self) -> Exception:
        """What a call must raise when a channel into the runtime broke or closed."""
        if self._closed or self._error is None:
            return ClosedError(f"the {self.name} is closed")
        self._reported = True
        return self._error

    async def start(self, actor: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Start ``actor(*args, task_status=...)`` in the runtime, supervised; return its value."""
        return await self.task_group.start(self._supervise, actor, *args)

    async def _supervise(
        self,
        actor: Callable[..., Awaitable[Any]],
        *args: Any,
        task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await actor(*args, task_status=task_status)
        except Exception as exc:
            self.fail(exc)
            raise

    async def _run(
        self, start: Callable[[Runtime], Awaitable[C]], started: Callable[[C], None]
    ) -> None:
        opened = False
        try:
            # Shielded: a cancellation of the block must not stop the actors
            # before the client has closed by its policy (a consumer commits
            # what was processed); run_client stops them (``stop``) in a
            # finally, so they never outlive the block. Started with
            # start_soon, not tg.start: trio does not hand a task started
            # in a cancelled scope over to its task group, so the caller's
            # start would wait for it, shielded, for ever.
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    if self._closed:  # stopped before it could start
                        tg.cancel_scope.cancel()
                    client = await start(self)
                    opened = True
                    started(client)
                    # Open until the client closes (or an actor fails): the
                    # client may start tasks here all along.
                    await anyio.sleep_forever()
        except BaseExceptionGroup as group:
            if not opened:
                raise
            # Failures were recorded by ``fail``; what is not an Exception
            # (cancellation from outside, KeyboardInterrupt) goes on.
            errors, rest = group.split(Exception)
            if errors is not None and self._error is None and not self._closed:
                self.fail(_first(errors))
            if rest is not None:
                raise rest from None
        finally:
            self._tg = None

    def _unreported(self) -> Exception | None:
        """The error the runtime died of, if no call has raised it yet."""
        return None if self._reported else self._error


@contextlib.asynccontextmanager
async def run_client(
    name: str,
    start: Callable[[Runtime], Awaitable[C]],
    close: Callable[[C, BaseException | None], Awaitable[None]],
    close_timeout: float,
    *,
    client_id: str = "",
    where: str = "",
) -> AsyncIterator[C]:
    """Run a client's runtime around the body of an ``async with``; see the module docstring.

    Args:
        name: "consumer" or "producer", for messages.
        client_id, where: the client's id, and what it runs on, for the
            INFO lines of its opening and closing.
        start: starts the actors in the runtime and returns the client.
        close: closes the client by policy, told the body's exception (None
            when the body ended normally); skipped when the runtime died.
        close_timeout: seconds ``close`` may take (shielded from cancellation).
    """
    runtime = Runtime(name)
    body_error: BaseException | None = None
    close_error: Exception | None = None
    try:
        async with anyio.create_task_group() as tg:
            opened: list[C] = []
            ready = anyio.Event()

            def started(client: C) -> None:
                opened.append(client)
                ready.set()

            tg.start_soon(runtime._run, start, started)
            try:
                # A start that fails fails the task group, which cancels
                # this wait; a cancellation from outside ends the wait, and
                # the finally stops the runtime, started or not.
                await ready.wait()
                client = opened[0]
                lifecycle = logging.getLogger(f"streamhouse.{name}")
                lifecycle.info("%s %s opened%s", name, client_id, where)
                try:
                    yield client
                except GeneratorExit:  # pragma: no cover - only if the generator is collected
                    raise
                except BaseException as exc:
                    body_error = exc
                close_error = await _close(runtime, client, close, body_error, close_timeout)
            finally:
                runtime.stop()
                if opened:
                    logging.getLogger(f"streamhouse.{name}").info("%s %s closed", name, client_id)
    except BaseException as exc:
        # What the task group raised on the way out. The body's own
        # exception wins, unless it was only a cancellation.
        if body_error is None or isinstance(body_error, anyio.get_cancelled_exc_class()):
            if isinstance(exc, BaseExceptionGroup):
                raise_as_one(exc)
            raise
    if body_error is not None:
        raise body_error
    if close_error is not None:
        raise close_error
    unreported = runtime._unreported()
    if unreported is not None:
        raise unreported


async def _close(
    runtime: Runtime,
    client: C,
    close: Callable[[C, BaseException | None], Awaitable[None]],
    body_error: BaseException | None,
    seconds: float,
) -> Exception | None:
    """Close by policy; return the close's error (None if it worked or did not matter)."""
    if not runtime.alive:
        return None
    with anyio.move_on_after(seconds, shield=True):
        try:
            await close(client, body_error)
        except Exception as exc:
            if body_error is None and runtime.alive:
                return exc
            # The body's own error wins over a failed close.
            _log.warning("closing the %s failed: %r", runtime.name, exc)
    return None


def _first(group: BaseExceptionGroup[Exception]) -> Exception:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        return exc
    raise AssertionError("an empty exception group")  # pragma: no cover
