"""The embedded mode's runner: workflow runs as asyncio tasks on one background event-loop thread.

Production hands runs to Celery instead (orchestration/tasks.py); both call the same
`orchestration.runs.execution.execute_run_async`, so a run behaves the same wherever it executes.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections import Counter

from orchestration.providers.pool import close_clients
from orchestration.runs.execution import execute_run_async

logger = logging.getLogger(__name__)


class InProcessRunner:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._tasks: dict[str, asyncio.Task] = {}  # touched only on the runner's loop
        self._pending = 0  # submitted and not yet finished
        self._in_flight: Counter[str] = Counter()  # the same, by run id (a run may be submitted twice)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def serve():
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name="podium-runner", daemon=True)
                self._thread.start()
                started.wait(10)
                self._loop = loop
            return self._loop

    def submit(self, run_id: str, *, resume: bool = False) -> None:
        """Execute the run in the background (a no-op if it is already executing here); a resumed run
        executes like any other."""
        loop = self._ensure_loop()
        with self._lock:
            self._pending += 1
            self._in_flight[run_id] += 1
        # A fresh context: the caller's (a Django request's sync thread) carries asgiref's executor for that request,
        # which is gone by the time the run reaches the database.
        loop.call_soon_threadsafe(lambda: loop.create_task(self._execute(run_id)), context=contextvars.Context())

    async def _execute(self, run_id: str) -> None:
        try:
            if run_id in self._tasks:
                return
            self._tasks[run_id] = asyncio.current_task()
            try:
                await execute_run_async(run_id)
            except asyncio.CancelledError:
                pass
            except Exception:
                logger.exception("in-process runner: run %s ended with an error", run_id)
            finally:
                self._tasks.pop(run_id, None)
        finally:
            with self._lock:
                self._pending -= 1
                self._in_flight[run_id] -= 1
                if not self._in_flight[run_id]:
                    del self._in_flight[run_id]

    def cancel(self, run_id: str) -> None:
        if self._loop is None:
            return

        def cancel_task():
            task = self._tasks.get(run_id)
            if task is not None:
                task.cancel()
        self._loop.call_soon_threadsafe(cancel_task)

    def close_clients(self) -> None:
        """Close the upstream HTTP clients runs opened on this runner's loop (they live as long as it)."""
        if self._loop is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(close_clients(), self._loop).result(10)

    def busy(self) -> int:
        return self._pending

    def in_flight(self) -> frozenset[str]:
        """The runs submitted here and not finished yet, whether or not they started."""
        with self._lock:
            return frozenset(self._in_flight)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once no run is submitted or executing here (tests and shutdown use it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._pending:
                return True
            time.sleep(0.02)
        return not self._pending


runner = InProcessRunner()
