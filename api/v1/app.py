"""The OpenAI-compatible /v1 endpoints as a lean ASGI app beside Django.

Django's request handler costs about 1 ms of CPU a request (PERFORMANCE-NOTES.md
§2); this path skips it: API keys and the registry come from in-process caches,
and run records go to the batched writer.
"""
from __future__ import annotations

import asyncio
import logging

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings

from api.errors import http_status
from api.v1.wire import (DONE_EVENT, ChunkEncoder, completion_body, error_body, error_event, parse_json, podium_options,
                         validate_chat_request, validate_embeddings_request)
from orchestration.access import budgets, limits
from orchestration.access.apikeys import KeyInfo, cached_key, load_key
from orchestration.access.bearer import bearer_token, request_header
from orchestration.access.hosts import host_header, host_is_allowed
from orchestration.engine.executor import StepFailed
from orchestration.engine.policy import PolicyViolation
from orchestration.engine.types import StreamDelta
from orchestration.errors import GatewayError
from orchestration.gateway.chat import chat_completion, current_registry
from orchestration.gateway.embeddings import create_embeddings
from orchestration.gateway.records import failed_call_error
from orchestration.gateway.streaming import stream_chat_completion
from orchestration.gateway.workflows import run_workflow_sync, stream_workflow

logger = logging.getLogger(__name__)
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]  # tells nginx not to buffer the stream


async def send_json(send, status: int, body: bytes, extra_headers: list | None = None) -> None:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *(extra_headers or ())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send, exc: GatewayError) -> None:
    headers = []
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(exc.retry_after))).encode()))
    if exc.run_id:
        headers.append((b"x-podium-run-id", exc.run_id.encode()))
    await send_json(send, http_status(exc), error_body(exc), headers)


async def read_body(receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise GatewayError(f"The request body is larger than {limit} bytes.", code="request_too_large")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def authenticate(scope, required_scope: str) -> KeyInfo:
    raw = bearer_token(scope)
    if not raw:
        raise GatewayError("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                           code="missing_api_key", type="authentication_error")
    hit, info = cached_key(raw)
    if not hit:
        info = await sync_to_async(load_key)(raw)
    if info is None:
        raise GatewayError("Incorrect or revoked API key.", code="invalid_api_key", type="authentication_error")
    if not info.allows(required_scope):
        raise GatewayError(f"This API key lacks the '{required_scope}' scope.", code="insufficient_scope",
                           type="permission_error")
    await limits.admit_async(info)  # requests/min: 429 + Retry-After (budgets: reserved with each call, below)
    return info


async def chat_completions(scope, receive, send) -> None:
    key = await authenticate(scope, "chat")
    data = parse_json(await read_body(receive, settings.PODIUM["MAX_BODY_BYTES"]))
    model, messages, params, metadata = validate_chat_request(data)
    if model.startswith("workflow/"):  # the run executes to its end, or to a gate awaiting review (202)
        if budgets.Payer.of(key) is not None:  # a used-up budget is a 429 now; each step reserves its own call
            await sync_to_async(budgets.check_open)(key)
        idempotency_key = request_header(scope, b"idempotency-key")
        if data.get("stream"):
            stream = await stream_workflow(key=key, model_name=model, messages=messages, params=params,
                                           metadata=metadata, data_class=podium_options(data, key).get("data_class"),
                                           idempotency_key=idempotency_key)
            await until_disconnect(receive, send_workflow_stream(send, stream, include_usage(data)))
            return
        outcome = await run_workflow_sync(key=key, model_name=model, messages=messages, params=params,
                                          metadata=metadata, stream=False,
                                          data_class=podium_options(data, key).get("data_class"),
                                          idempotency_key=idempotency_key)
        body = orjson.dumps(outcome.pending) if outcome.pending else completion_body(outcome)
        await send_json(send, 202 if outcome.pending else 200, body, [(b"x-podium-run-id", outcome.run_id.encode())])
        return
    # The call's upper bound is held against the key's and team's budgets before the upstream sees anything.
    async with budgets.holding(key, model, messages, params):
        if data.get("stream"):
            # Streams are never served from the response cache: of the podium options only data_class applies.
            stream = await stream_chat_completion(key=key, model_name=model, messages=messages, params=params,
                                                  metadata=metadata, data_class=podium_options(data, key).get("data_class"))
            await until_disconnect(receive, send_stream(send, stream, include_usage(data)))
            return
        outcome = await chat_completion(key=key, model_name=model, messages=messages, params=params,
                                        metadata=metadata, **podium_options(data, key))
    try:
        await send_json(send, 200, completion_body(outcome), [(b"x-podium-run-id", outcome.run_id.encode())])
    finally:  # the call's record is off the answer's path, and never lost with it
        outcome.answered()


def include_usage(data: dict) -> bool:
    options = data.get("stream_options")
    return bool(isinstance(options, dict) and options.get("include_usage"))


async def send_outcome_as_stream(send, outcome, usage: bool) -> None:
    """A finished answer in the streaming wire format: one content delta, its finish, usage, [DONE]."""
    result = outcome.result
    encoder = ChunkEncoder(run_id=outcome.run_id, created=outcome.created, model=outcome.model, include_usage=usage)
    body = encoder.delta(StreamDelta(text=result.output)) + encoder.closing(result.finish_reason)
    if usage:
        body += encoder.usage(result.tokens_in, result.tokens_out)
    await send({"type": "http.response.start", "status": 200,
                "headers": [*SSE_HEADERS, (b"x-podium-run-id", outcome.run_id.encode())]})
    await send({"type": "http.response.body", "body": body + DONE_EVENT})


async def send_workflow_stream(send, stream, usage: bool) -> None:
    """A workflow's final model call token by token (its earlier steps are live on the dashboard meanwhile).

    Headers wait for the first delta, so a run that fails before it is a plain error and one that pauses
    at a gate a 202. A final node that does not stream (parallel, cascade, refine, supervisor, gate)
    answers in one delta once the run finished."""
    deltas = stream.deltas()
    try:
        first = await anext(deltas, None)
        if first is None:
            outcome = await stream.outcome()
            if outcome.pending:
                await send_json(send, 202, orjson.dumps(outcome.pending),
                                [(b"x-podium-run-id", outcome.run_id.encode())])
            else:
                await send_outcome_as_stream(send, outcome, usage)
            return
        encoder = ChunkEncoder(run_id=stream.run_id, created=stream.created, model=stream.model, include_usage=usage)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*SSE_HEADERS, (b"x-podium-run-id", stream.run_id.encode())]})
        await send({"type": "http.response.body", "body": encoder.delta(first), "more_body": True})
        async for delta in deltas:
            await send({"type": "http.response.body", "body": encoder.delta(delta), "more_body": True})
        try:
            outcome = await stream.outcome()
        except GatewayError as exc:  # broken after tokens were sent, or the run's limits: too late for a status
            await send({"type": "http.response.body", "body": error_event(exc.message)})
            return
        result = outcome.result
        tail = encoder.closing(result.finish_reason)
        if usage:
            tail += encoder.usage(result.tokens_in, result.tokens_out)
        await send({"type": "http.response.body", "body": tail + DONE_EVENT})
    finally:
        await deltas.aclose()
        await stream.aclose()  # a run still under way (the client went away) is cancelled and recorded so


async def until_disconnect(receive, work) -> None:
    """Run `work` unless the client goes away first; then cancel it (which closes the upstream request)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(receive))
    await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        watcher.cancel()
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, GatewayError):
        pass


async def wait_for_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_stream(send, stream, include_usage: bool) -> None:
    """SSE in OpenAI's format. Headers wait for the first delta: a chain that fails before it is a plain 502."""
    deltas = stream.__aiter__()
    encoder = ChunkEncoder(run_id=stream.run_id, created=stream.created, model=stream.model,
                           include_usage=include_usage)
    try:
        try:
            first = await anext(deltas, None)
        except (StepFailed, PolicyViolation) as exc:  # before the first token: a plain error, as without streaming
            refused = exc if isinstance(exc, PolicyViolation) else None
            raise failed_call_error(error=str(exc), refused=refused, run_id=stream.run_id) from None
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*SSE_HEADERS, (b"x-podium-run-id", stream.run_id.encode())]})
        try:
            if first is not None:
                await send({"type": "http.response.body", "body": encoder.delta(first), "more_body": True})
            async for delta in deltas:
                await send({"type": "http.response.body", "body": encoder.delta(delta), "more_body": True})
        except Exception as exc:  # StepFailed after tokens were sent; nothing else is expected here
            if not isinstance(exc, StepFailed):
                logger.exception("stream %s failed", stream.run_id)
            await send({"type": "http.response.body", "body": error_event(f"The upstream model failed: {exc}")})
            return
        result = stream.stream.result
        tail = encoder.closing(result.finish_reason if result else "stop")
        if include_usage and result is not None:
            tail += encoder.usage(result.tokens_in, result.tokens_out)
        await send({"type": "http.response.body", "body": tail + DONE_EVENT})
    finally:
        await deltas.aclose()


async def embeddings(scope, receive, send) -> None:
    key = await authenticate(scope, "chat")
    data = parse_json(await read_body(receive, settings.PODIUM["MAX_BODY_BYTES"]))
    model, params, metadata = validate_embeddings_request(data)
    inputs = params.get("input")
    async with budgets.holding(key, model, [{"content": text} for text in
                                            (inputs if isinstance(inputs, list) else [inputs])], {}, output=False):
        outcome = await create_embeddings(key=key, model_name=model, params=params, metadata=metadata,
                                          data_class=podium_options(data, key).get("data_class"))
    await send_json(send, 200, orjson.dumps(outcome.data), [(b"x-podium-run-id", outcome.run_id.encode())])


async def list_models(scope, receive, send) -> None:
    key = await authenticate(scope, "chat")
    registry = await current_registry()
    # Only what the key's team may call (a key with no team: everything); the rest is not even named.
    data = [{"id": alias, "object": "model", "created": 0, "owned_by": spec.provider.name}
            for alias, spec in sorted(registry.models.items()) if key.may_call(alias)]
    data += [{"id": name, "object": "model", "created": 0, "owned_by": "podium-route"}
             for name in sorted(registry.routes) if key.may_call(name)]
    await send_json(send, 200, orjson.dumps({"object": "list", "data": data}))


ROUTES = {
    ("POST", "/v1/chat/completions"): chat_completions,
    ("POST", "/v1/embeddings"): embeddings,
    ("GET", "/v1/models"): list_models,
}


async def v1_app(scope, receive, send) -> None:
    path = scope["path"].rstrip("/") or "/"
    handler = ROUTES.get((scope["method"], path))
    try:
        if not host_is_allowed(host_header(scope)):  # Django's ALLOWED_HOSTS, which this app bypasses
            raise GatewayError("The Host header names a host this server does not serve (ALLOWED_HOSTS).",
                               code="invalid_host", param="host")
        if handler is None:
            if any(route_path == path for _, route_path in ROUTES):
                raise GatewayError(f"Method {scope['method']} is not allowed on {path}.", code="method_not_allowed")
            raise GatewayError(f"Unknown endpoint {path}.", code="unknown_url")
        await handler(scope, receive, send)
    except GatewayError as exc:
        await send_error(send, exc)
    except ConnectionAbortedError:
        return
    except Exception:
        logger.exception("unhandled error on %s", path)
        await send_error(send, GatewayError("Podium failed to handle the request.", code="internal_error",
                                            type="api_error"))
