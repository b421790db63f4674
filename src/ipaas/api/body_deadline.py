"""A deadline for reading a request's body: slow-loris bodies do not hold connections.

granian bounds the time a request's head may take (``IPAAS_HEADER_READ_TIMEOUT_S``), not
its body's: a client that sent its head and then one byte a second held its connection for
as long as it kept on. Every body read here (the intake's fast path and the routed API's,
``limited_receive``) must be done ``IPAAS_BODY_READ_TIMEOUT_S`` after it began, or the read
ends in ``RequestTimeout`` (408, ``Connection: close``): nothing read so far is used.

One sweep a second over the reads in progress cancels the tasks of those past their
deadline; a read itself costs a dictionary entry, where a timer per read
(``asyncio.timeout``) cost ~4 us a webhook, 3 % of the intake (docs/benchmarks.md). The
deadline is kept to within the sweep's period (a read may last up to a second longer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ipaas.errors import RequestTimeout

Message = Any

#: How often the reads in progress are looked at.
SWEEP_EVERY_S = 1.0


class BodyDeadline:
    """The body reads of one app: ``receive`` one message of a body whose read began at
    ``started`` (``time.monotonic()``), within ``timeout_s`` of it."""

    def __init__(self, timeout_s: float, *, sweep_every_s: float = SWEEP_EVERY_S) -> None:
        self.timeout_s = timeout_s
        self.sweep_every_s = sweep_every_s
        #: The tasks reading a body now -> when their read must be done.
        self._reading: dict[asyncio.Task[Any], float] = {}
        #: Tasks the sweep cancelled for their deadline (their CancelledError is ours).
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def receive(self, receive: Callable[[], Awaitable[Message]], started: float) -> Message:
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing to cancel (no ASGI server runs one so)
            return await receive()
        self._reading[task] = started + self.timeout_s
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        try:
            return await receive()
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            if task.uncancel() > 0:  # cancelled by someone else too: theirs goes on
                raise
            # The traceback keeps this frame: not the server's receive in it (the caller's
            # ``limited_receive`` says why).
            del receive
            raise RequestTimeout(
                f"The request body did not arrive within {self.timeout_s:g} s"
            ) from None
        finally:
            self._reading.pop(task, None)

    async def _sweep(self) -> None:
        try:
            while self._reading:
                await asyncio.sleep(self.sweep_every_s)
                now = time.monotonic()
                for task, deadline in list(self._reading.items()):
                    if deadline <= now and task not in self._expired and task.cancel():
                        self._expired.add(task)
        finally:
            self._sweeper = None
