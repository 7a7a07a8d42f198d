"""One long-lived event loop per process, on a daemon thread, for async work started from sync code.

Celery workers and management commands are sync. Running each coroutine with a fresh loop
(async_to_sync, asyncio.run) would open new Redis connections and upstream HTTP clients every
time — channels-redis and the provider pool keep theirs per loop — and connections left bound to a
closed loop fail later with "Event loop is closed" (the channels-redis 4 pitfall in workers).
Here they live as long as the process; a fork (Celery prefork children) gets its own loop.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading


class ProcessLoop:
    def __init__(self, name: str = "podium-loop") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._loop = asyncio.new_event_loop()
                self._pid = os.getpid()
                threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True).start()
            return self._loop

    def submit(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop())

    def run(self, coro, timeout: float | None = None):
        """Run a coroutine to completion from sync code and return its result (cancelled on timeout)."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()  # SoftTimeLimitExceeded, timeout, KeyboardInterrupt: stop the coroutine too
            raise


process_loop = ProcessLoop()
