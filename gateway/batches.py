"""Gather the lookups of one event-loop turn into one query.

Under load many requests reach their lookup in the same turn of the loop. Sent one by
one, each pays for a pool checkout, a protocol round trip and a statement execution.
Sent together, they share all three. A lookup waits until the end of the turn it was
made in, and while every pool connection is busy, until one is free, which it would
have waited for anyway.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Run `run_batch` on the items submitted in one loop turn; `run_batch` returns one result per item, in order."""

    def __init__(self, run_batch: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]], max_size: int) -> None:
        self._run_batch = run_batch
        self._max_size = max_size
        self._items: list[Item] = []
        self._futures: list[asyncio.Future[Result]] = []
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, item: Item) -> Result:
        """Return `item`'s result, or raise what `run_batch` raised for its batch."""
        loop = asyncio.get_running_loop()
        if not self._items:
            loop.call_soon(self._dispatch)
        future = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        if len(self._items) >= self._max_size:
            self._dispatch()
        return await future

    def _dispatch(self) -> None:
        if not self._items:
            return
        items, futures = self._items, self._futures
        self._items, self._futures = [], []
        task = asyncio.get_running_loop().create_task(self._run(items, futures))
        # The loop keeps only weak references to tasks.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list[Item], futures: list[asyncio.Future[Result]]) -> None:
        try:
            results = await self._run_batch(items)
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as error:
            for future in futures:
                if not future.done():
                    future.set_exception(error)
            return

        for future, result in zip(futures, results, strict=True):
            # A caller whose deadline passed has cancelled its future.
            if not future.done():
                future.set_result(result)
