"""Per-request deadlines enforced by one timer for all requests in flight.

`asyncio.timeout` creates and cancels a timer handle per request, about 5 us on uvloop. The
requests in flight share one timer instead, set for the earliest deadline. When it fires,
every request past its deadline is cancelled, and cancellations are counted as asyncio.timeout
counts them.
"""

import asyncio


class Deadline:
    __slots__ = ("task", "when", "cancelling", "expired")

    def __init__(self, task: asyncio.Task, when: float) -> None:
        self.task = task
        self.when = when
        self.cancelling = task.cancelling()
        self.expired = False

    def interrupted(self) -> bool:
        """Call on CancelledError: whether the cancellation was this deadline's own, which is then absorbed."""
        return self.expired and self.task.uncancel() <= self.cancelling


class Deadlines:
    def __init__(self) -> None:
        self._running: dict[Deadline, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def __len__(self) -> int:
        return len(self._running)

    def start(self, seconds: float) -> Deadline:
        """Give the current task a deadline `seconds` from now; call finish() when it is done."""
        loop = asyncio.get_running_loop()
        deadline = Deadline(asyncio.current_task(), loop.time() + seconds)
        self._running[deadline] = None
        if self._timer is None or deadline.when < self._timer_at:
            self._schedule(loop, deadline.when)
        return deadline

    def finish(self, deadline: Deadline) -> None:
        self._running.pop(deadline, None)

    def shorten(self, latest: float) -> None:
        """Move every deadline later than `latest` to `latest`."""
        for deadline in self._running:
            deadline.when = min(deadline.when, latest)
        if self._running:
            self._schedule(asyncio.get_running_loop(), min(deadline.when for deadline in self._running))

    def _schedule(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._expire, loop)
        self._timer_at = when

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        for deadline in list(self._running):
            if deadline.when <= now and not deadline.expired:
                deadline.expired = True
                deadline.task.cancel()

        waiting = [deadline.when for deadline in self._running if not deadline.expired]
        if waiting:
            self._schedule(loop, min(waiting))
