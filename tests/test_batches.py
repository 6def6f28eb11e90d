"""Batcher: the lookups of one loop turn go out together, and each caller gets its own result or error."""

import asyncio

import pytest

from gateway.batches import Batcher


class Doubler:
    """A batch function that records the batches it receives."""

    def __init__(self, fail_on: int | None = None, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self._fail_on = fail_on
        self._delay = delay

    async def __call__(self, items):
        self.batches.append(list(items))
        if self._delay:
            await asyncio.sleep(self._delay)
        if self._fail_on in items:
            raise LookupError(f"cannot look up {self._fail_on}")
        return [item * 2 for item in items]


async def test_one_turn_one_batch():
    doubler = Doubler()
    batcher = Batcher(doubler, max_size=100)

    results = await asyncio.gather(*(batcher.submit(number) for number in range(10)))

    assert results == [number * 2 for number in range(10)]
    assert doubler.batches == [list(range(10))]


async def test_later_turns_get_new_batches():
    doubler = Doubler()
    batcher = Batcher(doubler, max_size=100)

    assert await batcher.submit(1) == 2
    assert await batcher.submit(2) == 4

    assert doubler.batches == [[1], [2]]


async def test_max_size_splits_batches():
    doubler = Doubler()
    batcher = Batcher(doubler, max_size=4)

    results = await asyncio.gather(*(batcher.submit(number) for number in range(10)))

    assert results == [number * 2 for number in range(10)]
    assert doubler.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


async def test_error_reaches_every_caller_of_batch():
    batcher = Batcher(Doubler(fail_on=3), max_size=100)

    results = await asyncio.gather(*(batcher.submit(number) for number in range(5)), return_exceptions=True)

    assert len(results) == 5
    for result in results:
        assert isinstance(result, LookupError)
        assert str(result) == "cannot look up 3"


async def test_error_spares_other_batches():
    batcher = Batcher(Doubler(fail_on=3), max_size=2)

    results = await asyncio.gather(*(batcher.submit(number) for number in range(6)), return_exceptions=True)

    assert results[:2] == [0, 2]
    assert all(isinstance(result, LookupError) for result in results[2:4])
    assert results[4:] == [8, 10]


async def test_cancelled_caller_spares_others():
    batcher = Batcher(Doubler(delay=0.05), max_size=100)
    first = asyncio.ensure_future(batcher.submit(1))
    second = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0.01)

    first.cancel()

    assert await second == 4
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_batches_run_concurrently():
    doubler = Doubler(delay=0.2)
    batcher = Batcher(doubler, max_size=1)
    loop = asyncio.get_running_loop()
    started = loop.time()

    results = await asyncio.gather(*(batcher.submit(number) for number in range(5)))

    assert results == [0, 2, 4, 6, 8]
    assert len(doubler.batches) == 5
    # Five batches of 0.2 s each one after another would take 1 s.
    assert loop.time() - started < 0.8
