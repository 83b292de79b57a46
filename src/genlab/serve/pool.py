"""A bounded inference pool: `workers` threads run model calls, at most `queue` more wait their turn.

Past that the caller gets ServerBusy at once (the API answers 429 with Retry-After) instead of piling
up requests without bound: memory and latency stay bounded whatever the load.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class ServerBusy(Exception):
    """Every worker is busy and the queue is full."""


class InferencePool:
    def __init__(self, workers: int = 2, queue: int = 32):
        if workers < 1 or queue < 0:
            raise ValueError(f"need workers >= 1 and queue >= 0, got {workers} and {queue}")
        self.workers, self.queue = workers, queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="genlab-infer")
        self._slots = threading.BoundedSemaphore(workers + queue)  # running + waiting

    async def run(self, function: Callable[..., T], *args) -> T:
        """Run function(*args) on a worker thread; raises ServerBusy when no slot is free."""
        if not self._slots.acquire(blocking=False):
            raise ServerBusy(f"busy: {self.workers} running and {self.queue} waiting; retry shortly")
        try:
            work = self._executor.submit(function, *args)
        except BaseException:
            self._slots.release()
            raise
        # The slot is freed when the work itself ends (or is cancelled before it started), not when the
        # awaiting request goes away: a client that disconnects cannot free a slot its work still holds.
        work.add_done_callback(lambda _: self._slots.release())
        return await asyncio.wrap_future(work)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
