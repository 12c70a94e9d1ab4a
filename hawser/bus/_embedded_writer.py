"""The writer loop of the embedded log: a bounded queue of operations and one task that drains it in
batches, each ONE SQLite transaction on the writer thread, resolving every sender only after COMMIT.

A batch that fails fails only its own senders (with a generic `BusUnavailable`, the cause logged); the
loop carries on. Closing flushes what is queued, fails fast whoever still waits for room in the queue,
and never raises an old failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from hawser.bus._embedded_store import Append, BatchResult, LogWriter, Op
from hawser.errors import BusUnavailable, UnknownTopic

log = logging.getLogger(__name__)

CLOSED = "the embedded event log is closed"
FAILED = "the embedded event log could not store the record"


@dataclass(frozen=True, slots=True)
class _Pending:
    op: Op
    future: asyncio.Future[None]


class WriterLoop:
    """Group commit: whoever is waiting when a batch starts shares its one fsync."""

    def __init__(
        self,
        writer: LogWriter,
        thread: ThreadPoolExecutor,
        on_commit: Callable[[Sequence[Op], BatchResult], None],
        *,
        default_partitions: int,
        queue_size: int,
        batch_size: int,
        send_timeout_s: float,
    ) -> None:
        self._writer = writer
        self._thread = thread
        self._on_commit = on_commit
        self._default_partitions = default_partitions
        self._batch_size = batch_size
        self._send_timeout_s = send_timeout_s
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue(maxsize=queue_size)
        self._closing = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="hawser-log-writer")

    @property
    def alive(self) -> bool:
        return not self._task.done() and not self._closing.is_set()

    async def submit(self, op: Op) -> None:
        """Queue `op` and wait until it is committed (or refused: `UnknownTopic`, `BusUnavailable`)."""
        if not self.alive:
            raise BusUnavailable(CLOSED)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._send_timeout_s):
                await self._enqueue(_Pending(op, future))
                await future
        except TimeoutError:
            future.cancel()  # the writer skips it if it has not started its batch yet
            raise BusUnavailable(
                f"the embedded event log did not acknowledge within {self._send_timeout_s} s") from None
        finally:
            if not future.done():
                future.cancel()  # cancelled senders too: never written once the batch skips it

    async def _enqueue(self, item: _Pending) -> None:
        if not self._queue.full():
            self._queue.put_nowait(item)
            return
        # Full: wait for room, but give up at once when the log closes (nobody would drain it).
        put = asyncio.ensure_future(self._queue.put(item))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({put, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not put.done():
                put.cancel()
                await asyncio.gather(put, return_exceptions=True)  # it may have got in meanwhile
        if put.cancelled():
            raise BusUnavailable(CLOSED)

    async def aclose(self) -> None:
        """Commit what is queued, then stop; fail whoever is still waiting. Never raises."""
        self._closing.set()
        if not self._task.done():
            await self._queue.put(None)  # the writer commits what is queued, then stops
        await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None and not item.future.done():
                item.future.set_exception(BusUnavailable(CLOSED))

    async def _run(self) -> None:
        queue = self._queue
        batch: list[_Pending] = []
        try:
            while True:
                first = await queue.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < self._batch_size and not queue.empty():
                    item = queue.get_nowait()
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                batch = [item for item in batch if not item.future.done()]
                if batch:
                    await self._write(batch)
                batch = []
                if stop:
                    return
        except BaseException:
            # Cancelled from outside: nobody may wait forever on a dead writer.
            self._closing.set()
            while not queue.empty():
                item = queue.get_nowait()
                if item is not None:
                    batch.append(item)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(BusUnavailable(CLOSED))
            raise

    async def _write(self, batch: list[_Pending]) -> None:
        ops = [item.op for item in batch]
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._thread, self._writer.write, ops,
                                                self._default_partitions)
        except Exception as exc:  # any failure fails this batch only; the next one may succeed
            log.error("embedded log: a batch of %d operations failed", len(ops), exc_info=exc)
            for item in batch:
                if not item.future.done():
                    error = BusUnavailable(FAILED)
                    error.__cause__ = exc
                    item.future.set_exception(error)
            return
        self._on_commit(ops, result)
        for index, item in enumerate(batch):
            if item.future.done():
                continue
            op = item.op
            if index in result.unknown and isinstance(op, Append):
                item.future.set_exception(UnknownTopic(f"no topic {op.topic!r} on the event bus"))
            else:
                item.future.set_result(None)
