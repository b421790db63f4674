"""Scale-out cancel bus: Redis pub/sub on one channel carrying execution ids.

Every process that starts a ``Runtime`` subscribes; a cancel through any API process publishes
the id and the process running the execution stops it (everywhere else it is a no-op). Pub/sub
is fire-and-forget: a process that is not subscribed at that moment (Redis down, reconnecting)
misses the message, so the store's ``cancel_requested`` flag, polled by the worker's heartbeat,
remains the guarantee; the bus only makes it fast.

Neither ``start`` nor ``publish`` fails for an unreachable Redis: the subscription retries in
the background (and re-subscribes whenever the connection drops), and a publish that cannot
reach Redis stops the execution if it runs in this process and leaves the rest to the heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from ipaas.engine.cancellation import OnCancel

_log = structlog.get_logger(__name__)

DEFAULT_CHANNEL = "ipaas:cancel"
_READ_WAIT_S = 5.0


class RedisCancelBus:
    def __init__(
        self,
        url: str,
        *,
        channel: str = DEFAULT_CHANNEL,
        connect_timeout_s: float = 5.0,
        retry_s: float = 1.0,
        publish_timeout_s: float = 2.0,
        client_name: str | None = None,
    ) -> None:
        self.channel = channel
        self._connect_timeout_s = connect_timeout_s
        self._retry_s = retry_s
        self._publish_timeout_s = publish_timeout_s
        self._redis: Redis = Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout_s,
            socket_keepalive=True,
            # Pings an idle subscription, so a silently dead connection is noticed.
            health_check_interval=30,
            client_name=client_name,
        )
        self._on_cancel: OnCancel | None = None
        self._listener: asyncio.Task[None] | None = None
        #: Set while the subscription is live (tests and start-up wait on it).
        self.subscribed = asyncio.Event()
        self._first_attempt = asyncio.Event()

    async def start(self, on_cancel: OnCancel) -> None:
        """Subscribe; waits for the first attempt only (at most the connect timeout), so a
        process starts whether or not Redis is up."""
        if self._listener is not None:
            return
        self._on_cancel = on_cancel
        self._listener = asyncio.create_task(self._listen(), name="cancel-bus")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._connect_timeout_s + 1):
                await self._first_attempt.wait()

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        self.subscribed.clear()
        await self._redis.aclose()

    async def publish(self, execution_id: str) -> None:
        try:
            async with asyncio.timeout(self._publish_timeout_s):
                await self._redis.publish(self.channel, execution_id)
        except (RedisError, OSError, TimeoutError):
            _log.warning(
                "cancel_publish_failed",
                channel=self.channel,
                execution_id=execution_id,
                exc_info=True,
            )
            # Not lost: the store has the flag. If it runs here, stop it now anyway.
            self._deliver(execution_id)

    # -- subscription ------------------------------------------------------------------------
    async def _listen(self) -> None:
        outage_logged = False
        while True:
            try:
                pubsub: PubSub = self._redis.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.subscribe(self.channel)
                    self.subscribed.set()
                    self._first_attempt.set()
                    if outage_logged:
                        _log.info("cancel_bus_subscribed", channel=self.channel)
                    outage_logged = False
                    await self._read(pubsub)
                finally:
                    self.subscribed.clear()
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError):
                # Once per outage, not once per retry.
                if not outage_logged:
                    _log.warning("cancel_bus_unreachable", channel=self.channel, exc_info=True)
                outage_logged = True
            except Exception:  # never let the bus die: a cancel would fall back to heartbeats
                _log.exception("cancel_bus_failed", channel=self.channel)
            self._first_attempt.set()
            await asyncio.sleep(self._retry_s)

    async def _read(self, pubsub: PubSub) -> None:
        while True:
            # A bounded wait returns at once when a message arrives; between waits the client
            # pings an idle connection (``health_check_interval``), so a dead one raises.
            message = await pubsub.get_message(timeout=_READ_WAIT_S)
            if message is None or message.get("type") != "message":
                continue
            data = message.get("data")
            if isinstance(data, bytes):
                self._deliver(data.decode(errors="replace"))

    def _deliver(self, execution_id: str) -> None:
        if self._on_cancel is None:
            return
        try:
            self._on_cancel(execution_id)
        except Exception:
            _log.exception("cancel_callback_failed", execution_id=execution_id)
