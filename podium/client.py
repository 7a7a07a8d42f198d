"""A small Python client for what the OpenAI API cannot express: workflow runs, reviews, live events.

Importable without Django settings. Plain chat calls stay with the OpenAI SDK
(`OpenAI(base_url=f"{url}/v1", api_key=key)`); this covers the rest:

    from podium.client import PodiumClient

    with PodiumClient("http://127.0.0.1:8000", api_key="pdm_…") as podium:
        run = podium.run("support-reply", "Where is my parcel?", timeout=60)
        if run.awaiting_review:
            review = podium.pending_review(run.id)
            podium.decide_review(review.id, "approve", candidate=0)      # needs scope reviews:decide
        for event in podium.run_events(run.id):                          # websocket, scope events
            print(event["type"])

Requests that answer 429 or 5xx (or fail to connect) are retried with exponential
backoff and jitter; a `Retry-After` header (seconds or an HTTP date) is honoured
as given. `AsyncPodiumClient` has the same methods as coroutines.
"""
from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx

from podium.client_results import (FINAL_STATUSES, SETTLED_STATUSES, PodiumError, Review, Run, Step,
                                   WaitTimeout)

__all__ = [
    "AsyncPodiumClient", "PodiumClient", "PodiumError", "RetryPolicy", "Review", "Run", "Step",
    "WaitTimeout", "FINAL_STATUSES", "SETTLED_STATUSES",
]

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
Decision = Literal["approve", "edit", "reject"]


def _error_message(body: Any, fallback: str) -> tuple[str, str]:
    """(message, code) from the shapes Podium answers with: /v1 errors, DRF details, field errors."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"]), str(error.get("code") or "")
        if body.get("detail"):
            return str(body["detail"]), str(body.get("code") or "")
        parts = [f"{name}: {' '.join(map(str, value)) if isinstance(value, list) else value}"
                 for name, value in body.items()]
        if parts:
            return "; ".join(parts), ""
    return fallback, ""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter between `base_s` and a cap; Retry-After wins when given."""

    max_retries: int = 4
    base_s: float = 0.5
    max_backoff_s: float = 20.0
    max_retry_after_s: float = 60.0  # a server asking for longer gets its error back instead of a hung caller
    jitter: bool = True

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return retry_after
        ceiling = min(self.max_backoff_s, self.base_s * (2 ** attempt))
        return rng.uniform(ceiling / 2, ceiling) if self.jitter else ceiling


def _websocket_url(base_url: str, team: str | None = None) -> str:
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    query = f"?team={quote(team, safe='')}" if team else ""  # one team of those the key may watch
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/ws/dashboard/{query}"


def _origin(base_url: str) -> str:
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


def _refused(base_url: str, exc) -> PodiumError:
    status = exc.response.status_code
    return PodiumError(f"{base_url} refused the websocket (HTTP {status}): it needs an API key with the "
                       "'events' scope", status=status)


def _subscribe_frames(topics: tuple[str, ...]) -> list[str]:
    return [json.dumps({"type": "subscribe", "topic": topic}) for topic in topics]


def _is_run_end(frame: dict, run_id: str) -> bool:
    """The last frame worth waiting for on a run's topic: one carrying its final (or review-waiting) status."""
    if frame.get("type") in ("snapshot", "delta"):
        values = (frame.get("data") or {}).get("values") if frame["type"] == "snapshot" else frame.get("changes")
        run = (values or {}).get("run")
        return isinstance(run, dict) and run.get("status") in SETTLED_STATUSES
    return (frame.get("type") == "run.updated" and str(frame.get("run_id")) == run_id
            and frame.get("status") in SETTLED_STATUSES)


class _Base:
    def __init__(self, base_url: str | None, api_key: str | None, *, timeout: float, retry: RetryPolicy,
                 seed: int | None):
        self.base_url = (base_url or os.environ.get("PODIUM_URL") or "http://127.0.0.1:8000").rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("PODIUM_API_KEY", "")
        self.timeout = timeout
        self.retry = retry
        self._rng = random.Random(seed)

    def _headers(self) -> dict[str, str]:
        headers = {"accept": "application/json", "user-agent": "podium-client"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    @staticmethod
    def _may_retry(exc: httpx.TransportError, headers: dict | None) -> bool:
        """A connection never made surely never reached Podium; any other break is retried only under an
        Idempotency-Key (the server then returns the first attempt's result instead of doing it again)."""
        return isinstance(exc, httpx.ConnectError) or bool(headers and headers.get("Idempotency-Key"))

    @staticmethod
    def _idempotency_headers(key: str | None) -> dict[str, str]:
        return {"Idempotency-Key": key or uuid.uuid4().hex}

    def _ws_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _should_retry(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before the next attempt, or None to stop here."""
        if attempt >= self.retry.max_retries:
            return None
        if response is not None and response.status_code not in RETRYABLE_STATUSES:
            return None
        retry_after = parse_retry_after(response.headers.get("retry-after")) if response is not None else None
        if retry_after is not None and retry_after > self.retry.max_retry_after_s:
            return None
        return self.retry.delay(attempt, retry_after, self._rng)

    @staticmethod
    def _result(response: httpx.Response) -> Any:
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = response.text
        if response.is_success:
            return body
        message, code = _error_message(body, f"HTTP {response.status_code}")
        raise PodiumError(f"{response.request.method} {response.request.url.path} answered "
                          f"{response.status_code}: {message}", status=response.status_code, code=code, body=body,
                          retry_after=parse_retry_after(response.headers.get("retry-after")))

    @staticmethod
    def _run_body(workflow: str, input: Any, metadata: dict | None, budget_usd: float | None,
                  deadline_s: float | None) -> dict:
        body: dict[str, Any] = {"workflow": workflow, "input": input, "metadata": metadata or {}}
        if budget_usd is not None:
            body["budget_usd"] = budget_usd
        if deadline_s is not None:
            body["deadline_s"] = deadline_s
        return body

    @staticmethod
    def _decision_body(decision: str, candidate: int | None, output: str | None, comment: str) -> dict:
        if decision not in ("approve", "edit", "reject"):
            raise ValueError("decision must be 'approve', 'edit' or 'reject'")
        if decision == "edit" and output is None:
            raise ValueError("an 'edit' decision needs the edited output")
        if decision == "reject" and (candidate is not None or output is not None):
            raise ValueError("a 'reject' decision takes only a comment")
        body: dict[str, Any] = {"comment": comment}
        if candidate is not None:
            body["candidate"] = candidate
        if output is not None:
            body["output"] = output
        return body

    @staticmethod
    def _review_params(status: str | None, run_id: str | None) -> dict:
        params: dict[str, Any] = {"limit": 200}
        if status == "open":
            params["open"] = "true"
        elif status:
            params["status"] = status
        if run_id:
            params["run"] = str(run_id)
        return params

    @staticmethod
    def _reviews(body: Any) -> list[Review]:
        rows = body.get("results", []) if isinstance(body, dict) else body or []
        return [Review.from_api(row) for row in rows]


class PodiumClient(_Base):
    """Synchronous client (httpx). Use as a context manager, or call `close()`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 30.0,
                 retry: RetryPolicy = RetryPolicy(), transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep, seed: int | None = None):
        super().__init__(base_url, api_key, timeout=timeout, retry=retry, seed=seed)
        self._sleep = sleep
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers(), timeout=timeout,
                                  transport=transport)

    def __enter__(self) -> "PodiumClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None,
                headers: dict | None = None) -> Any:
        """One API call with retries; returns the decoded JSON or raises PodiumError.

        A request that may have reached Podium (the connection broke after it was sent) is retried only when it
        carries an Idempotency-Key: then a retry cannot do the work twice."""
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, json=json_body, params=params, headers=headers)
            except httpx.TransportError as exc:
                wait = self._should_retry(attempt, None) if self._may_retry(exc, headers) else None
                if wait is None:
                    raise PodiumError(f"{method} {path} failed: {type(exc).__name__}: {exc}") from exc
            else:
                wait = self._should_retry(attempt, response)
                if wait is None:
                    return self._result(response)
            self._sleep(wait)
            attempt += 1

    # runs
    def submit_run(self, workflow: str, input: Any, *, metadata: dict | None = None,
                   budget_usd: float | None = None, deadline_s: float | None = None,
                   idempotency_key: str | None = None) -> Run:
        """Start a workflow run (POST /api/runs/ → 202); returns at once with its id and status. Every call
        sends an Idempotency-Key (a fresh one unless given), so its retries never start a second run."""
        body = self.request("POST", "/api/runs/",
                            json_body=self._run_body(workflow, input, metadata, budget_usd, deadline_s),
                            headers=self._idempotency_headers(idempotency_key))
        return Run.from_api(body)

    def get_run(self, run_id: str) -> Run:
        return Run.from_api(self.request("GET", f"/api/runs/{quote(str(run_id))}/"))

    def cancel_run(self, run_id: str) -> Run:
        self.request("POST", f"/api/runs/{quote(str(run_id))}/cancel/")
        return self.get_run(run_id)

    def wait_for_run(self, run_id: str, *, timeout: float | None = 300.0, poll_s: float = 0.1,
                     max_poll_s: float = 2.0) -> Run:
        """Poll until the run is final or waits for review; raises WaitTimeout with its last state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.get_run(run_id)
            if run.is_settled:
                return run
            if deadline is not None and time.monotonic() + poll_s > deadline:
                raise WaitTimeout(f"run {run_id} is still {run.status} after {timeout:g}s", run)
            self._sleep(poll_s)
            poll_s = min(max_poll_s, poll_s * 1.5)

    def run(self, workflow: str, input: Any, *, timeout: float | None = 300.0, **options) -> Run:
        """Submit a run and wait until it settles."""
        return self.wait_for_run(self.submit_run(workflow, input, **options).id, timeout=timeout)

    # reviews (the key needs scope reviews:decide, even to list them)
    def list_reviews(self, *, status: str | None = "open", run_id: str | None = None) -> list[Review]:
        """Review items; status "open" (pending or claimed), a status name, a comma-separated list, or None."""
        return self._reviews(self.request("GET", "/api/reviews/", params=self._review_params(status, run_id)))

    def get_review(self, review_id: str) -> Review:
        return Review.from_api(self.request("GET", f"/api/reviews/{quote(str(review_id))}/"))

    def pending_review(self, run_id: str) -> Review | None:
        """The open review of a run that waits for one, if any."""
        reviews = self.list_reviews(status="open", run_id=run_id)
        return reviews[-1] if reviews else None

    def decide_review(self, review_id: str, decision: Decision, *, candidate: int | None = None,
                      output: str | None = None, comment: str = "") -> Review:
        """Approve (the best candidate, or the one given), edit (release `output`) or reject.

        A key decides directly (claims are held by people); someone else's claim or an earlier
        decision answers 409, which is raised as PodiumError(status=409).
        """
        body = self._decision_body(decision, candidate, output, comment)
        return Review.from_api(self.request("POST", f"/api/reviews/{quote(str(review_id))}/{decision}/",
                                            json_body=body))

    # live events (the dashboard websocket; the key needs scope `events`)
    def events(self, topics: tuple[str, ...] | list[str] = ("overview",), *, open_timeout: float = 10.0,
               recv_timeout: float | None = None) -> Iterator[dict]:
        """Frames of the dashboard protocol for these topics: a snapshot each, then deltas.

        Topics: `overview`, `runs`, `reviews`, `run:<id>`. Frames look like
        `{"type": "snapshot" | "delta" | "metrics.tick", "topic", "seq", "data" | "changes", …}`
        (dashboard/protocol.py). Closing the generator closes the socket; `recv_timeout` raises
        TimeoutError when nothing arrives for that long.
        """
        with self._socket(tuple(topics), open_timeout) as socket:
            while True:
                yield json.loads(socket.recv(timeout=recv_timeout))

    def run_events(self, run_id: str, *, timeout: float | None = 300.0) -> Iterator[dict]:
        """The frames of one run's topic until it is final or waits for review (TimeoutError after `timeout`).

        Step rows arrive under keys `step.<id>` (status running, then succeeded / failed, with model,
        tokens, cost and latency), the run's own row under `run`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._socket((f"run:{run_id}",), min(10.0, timeout or 10.0)) as socket:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                frame = json.loads(socket.recv(timeout=left))
                yield frame
                if _is_run_end(frame, str(run_id)):
                    return

    @contextlib.contextmanager
    def _socket(self, topics: tuple[str, ...], open_timeout: float):
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        try:
            socket = connect(_websocket_url(self.base_url), additional_headers=self._ws_headers(),
                             origin=_origin(self.base_url), open_timeout=open_timeout)
        except InvalidStatus as exc:
            raise _refused(self.base_url, exc) from None
        with socket:
            for frame in _subscribe_frames(topics):
                socket.send(frame)
            yield socket

    # misc
    def health(self) -> dict:
        return self.request("GET", "/readyz")


class AsyncPodiumClient(_Base):
    """The same client for asyncio code (httpx.AsyncClient, websockets' asyncio client)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 30.0,
                 retry: RetryPolicy = RetryPolicy(), transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Any] = asyncio.sleep, seed: int | None = None):
        super().__init__(base_url, api_key, timeout=timeout, retry=retry, seed=seed)
        self._sleep = sleep
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers(), timeout=timeout,
                                       transport=transport)

    async def __aenter__(self) -> "AsyncPodiumClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None,
                      headers: dict | None = None) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, json=json_body, params=params, headers=headers)
            except httpx.TransportError as exc:
                wait = self._should_retry(attempt, None) if self._may_retry(exc, headers) else None
                if wait is None:
                    raise PodiumError(f"{method} {path} failed: {type(exc).__name__}: {exc}") from exc
            else:
                wait = self._should_retry(attempt, response)
                if wait is None:
                    return self._result(response)
            await self._sleep(wait)
            attempt += 1

    async def submit_run(self, workflow: str, input: Any, *, metadata: dict | None = None,
                         budget_usd: float | None = None, deadline_s: float | None = None,
                         idempotency_key: str | None = None) -> Run:
        body = await self.request("POST", "/api/runs/",
                                  json_body=self._run_body(workflow, input, metadata, budget_usd, deadline_s),
                                  headers=self._idempotency_headers(idempotency_key))
        return Run.from_api(body)

    async def get_run(self, run_id: str) -> Run:
        return Run.from_api(await self.request("GET", f"/api/runs/{quote(str(run_id))}/"))

    async def cancel_run(self, run_id: str) -> Run:
        await self.request("POST", f"/api/runs/{quote(str(run_id))}/cancel/")
        return await self.get_run(run_id)

    async def wait_for_run(self, run_id: str, *, timeout: float | None = 300.0, poll_s: float = 0.1,
                           max_poll_s: float = 2.0) -> Run:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = await self.get_run(run_id)
            if run.is_settled:
                return run
            if deadline is not None and time.monotonic() + poll_s > deadline:
                raise WaitTimeout(f"run {run_id} is still {run.status} after {timeout:g}s", run)
            await self._sleep(poll_s)
            poll_s = min(max_poll_s, poll_s * 1.5)

    async def run(self, workflow: str, input: Any, *, timeout: float | None = 300.0, **options) -> Run:
        run = await self.submit_run(workflow, input, **options)
        return await self.wait_for_run(run.id, timeout=timeout)

    async def list_reviews(self, *, status: str | None = "open", run_id: str | None = None) -> list[Review]:
        return self._reviews(await self.request("GET", "/api/reviews/", params=self._review_params(status, run_id)))

    async def pending_review(self, run_id: str) -> Review | None:
        reviews = await self.list_reviews(status="open", run_id=run_id)
        return reviews[-1] if reviews else None

    async def decide_review(self, review_id: str, decision: Decision, *, candidate: int | None = None,
                            output: str | None = None, comment: str = "") -> Review:
        body = self._decision_body(decision, candidate, output, comment)
        return Review.from_api(await self.request("POST", f"/api/reviews/{quote(str(review_id))}/{decision}/",
                                                  json_body=body))

    async def events(self, topics: tuple[str, ...] | list[str] = ("overview",), *,
                     open_timeout: float = 10.0, team: str | None = None) -> AsyncIterator[dict]:
        """As PodiumClient.events, for asyncio; `team` (a slug) watches that team only."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        try:
            socket = await connect(_websocket_url(self.base_url, team), additional_headers=self._ws_headers(),
                                   origin=_origin(self.base_url), open_timeout=open_timeout)
        except InvalidStatus as exc:
            raise _refused(self.base_url, exc) from None
        async with socket:
            for frame in _subscribe_frames(tuple(topics)):
                await socket.send(frame)
            async for message in socket:
                yield json.loads(message)

    async def run_events(self, run_id: str) -> AsyncIterator[dict]:
        """As PodiumClient.run_events, for asyncio (bound it with asyncio.timeout)."""
        async for frame in self.events((f"run:{run_id}",)):
            yield frame
            if _is_run_end(frame, str(run_id)):
                return
