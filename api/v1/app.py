"""The OpenAI-compatible /v1 endpoints as a lean ASGI app beside Django.

Django's request handler costs about 1 ms of CPU a request (PERFORMANCE-NOTES.md
§2); this path skips it: API keys and the registry come from in-process caches,
and run records go to the batched writer.
"""
from __future__ import annotations

import logging

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings

from api.v1.wire import completion_body, error_body, parse_json, validate_chat_request
from orchestration.apikeys import KeyInfo, cached_key, load_key
from orchestration.services import GatewayError, chat_completion, current_registry

logger = logging.getLogger(__name__)
JSON_HEADERS = [(b"content-type", b"application/json")]


async def send_json(send, status: int, body: bytes, extra_headers: list | None = None) -> None:
    headers = JSON_HEADERS + (extra_headers or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send, exc: GatewayError) -> None:
    headers = []
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(exc.retry_after))).encode()))
    if exc.run_id:
        headers.append((b"x-podium-run-id", exc.run_id.encode()))
    await send_json(send, exc.status, error_body(exc), headers)


async def read_body(receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise GatewayError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def bearer_token(scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            text = value.decode("latin-1")
            return text[7:].strip() if text[:7].lower() == "bearer " else ""
    return ""


async def authenticate(scope, required_scope: str) -> KeyInfo:
    raw = bearer_token(scope)
    if not raw:
        raise GatewayError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                           code="missing_api_key", type="authentication_error")
    hit, info = cached_key(raw)
    if not hit:
        info = await sync_to_async(load_key)(raw)
    if info is None:
        raise GatewayError(401, "Incorrect or revoked API key.", code="invalid_api_key", type="authentication_error")
    if not info.allows(required_scope):
        raise GatewayError(403, f"This API key lacks the '{required_scope}' scope.", code="insufficient_scope",
                           type="permission_error")
    return info


async def chat_completions(scope, receive, send) -> None:
    key = await authenticate(scope, "chat")
    data = parse_json(await read_body(receive, settings.PODIUM["MAX_BODY_BYTES"]))
    if data.get("stream"):
        raise GatewayError(400, "Streaming is not available yet on this server; send stream=false.",
                           code="unsupported_parameter", param="stream")
    model, messages, params, metadata = validate_chat_request(data)
    outcome = await chat_completion(key=key, model_name=model, messages=messages, params=params, metadata=metadata)
    await send_json(send, 200, completion_body(outcome), [(b"x-podium-run-id", outcome.run_id.encode())])


async def list_models(scope, receive, send) -> None:
    await authenticate(scope, "chat")
    registry = await current_registry()
    data = [{"id": alias, "object": "model", "created": 0, "owned_by": spec.provider.name}
            for alias, spec in sorted(registry.models.items())]
    data += [{"id": name, "object": "model", "created": 0, "owned_by": "podium-route"}
             for name in sorted(registry.routes)]
    await send_json(send, 200, orjson.dumps({"object": "list", "data": data}))


ROUTES = {
    ("POST", "/v1/chat/completions"): chat_completions,
    ("GET", "/v1/models"): list_models,
}


async def v1_app(scope, receive, send) -> None:
    path = scope["path"].rstrip("/") or "/"
    handler = ROUTES.get((scope["method"], path))
    try:
        if handler is None:
            if any(route_path == path for _, route_path in ROUTES):
                raise GatewayError(405, f"Method {scope['method']} is not allowed on {path}.", code="method_not_allowed")
            raise GatewayError(404, f"Unknown endpoint {path}.", code="unknown_url")
        await handler(scope, receive, send)
    except GatewayError as exc:
        await send_error(send, exc)
    except ConnectionAbortedError:
        return
    except Exception:
        logger.exception("unhandled error on %s", path)
        await send_error(send, GatewayError(500, "Podium failed to handle the request.", code="internal_error",
                                            type="api_error"))
