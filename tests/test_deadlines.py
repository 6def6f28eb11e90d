"""Deadlines sharing one timer: expiry, outside cancellation and shortening on shutdown."""

import asyncio

from gateway.deadlines import Deadlines


async def _run(deadlines: Deadlines, work_seconds: float, deadline_seconds: float) -> str:
    deadline = deadlines.start(deadline_seconds)
    try:
        await asyncio.sleep(work_seconds)
        return "finished"
    except asyncio.CancelledError:
        if not deadline.interrupted():
            raise
    finally:
        deadlines.finish(deadline)
    return "expired"


async def test_deadlines_expire_only_late_tasks():
    deadlines = Deadlines()

    results = await asyncio.gather(
        _run(deadlines, 0.01, 0.2),
        _run(deadlines, 5, 0.2),
        _run(deadlines, 5, 0.3),
        _run(deadlines, 0.4, 2),
    )

    assert results == ["finished", "expired", "expired", "finished"]
    assert len(deadlines) == 0


async def test_deadline_absorbs_only_its_own_cancel():
    deadlines = Deadlines()
    task = asyncio.create_task(_run(deadlines, 5, 0.1))
    await asyncio.sleep(0.2)

    assert await task == "expired"
    assert task.cancelling() == 0


async def test_outside_cancel_still_propagates():
    deadlines = Deadlines()
    task = asyncio.create_task(_run(deadlines, 5, 2))
    await asyncio.sleep(0.05)

    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert task.cancelled()
    assert len(deadlines) == 0


async def test_shorten_moves_deadlines_earlier():
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(_run(deadlines, 5, 20))
    await asyncio.sleep(0.01)

    started = loop.time()
    deadlines.shorten(started + 0.1)
    result = await task

    assert result == "expired"
    assert loop.time() - started < 2
