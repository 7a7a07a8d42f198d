"""The OpenAI wire format: request validation, responses, errors."""
from __future__ import annotations

import orjson

from orchestration.services import ChatOutcome, GatewayError

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
# Podium's own request fields; never sent upstream.
PODIUM_FIELDS = {"model", "messages", "stream", "stream_options", "metadata", "podium"}


def error_body(exc: GatewayError) -> bytes:
    return orjson.dumps({"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}})


def bad_request(message: str, *, param: str | None = None, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, message, code=code, param=param)


def parse_json(body: bytes) -> dict:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    return data


def validate_chat_request(data: dict) -> tuple[str, list[dict], dict, dict]:
    """(model, messages, params sent upstream, metadata) or a 400 naming the bad field."""
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a string.", param="model")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' is required and must be a non-empty array.", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise bad_request(f"messages[{index}] must be an object with a 'role' among "
                              f"{', '.join(sorted(ROLES))}.", param=f"messages[{index}]")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise bad_request(f"messages[{index}].content must be a string or an array of content parts.",
                              param=f"messages[{index}].content")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise bad_request("'metadata' must be an object.", param="metadata")
    params = {name: value for name, value in data.items() if name not in PODIUM_FIELDS}
    return model, messages, params, metadata


def completion_body(outcome: ChatOutcome) -> bytes:
    result = outcome.result
    message: dict = {"role": "assistant", "content": result.output}
    if result.tool_calls:
        message["tool_calls"] = result.tool_calls
    return orjson.dumps({
        "id": f"chatcmpl-{outcome.run_id.replace('-', '')}",
        "object": "chat.completion",
        "created": outcome.created,
        "model": outcome.model,
        "choices": [{"index": 0, "message": message, "finish_reason": result.finish_reason, "logprobs": None}],
        "usage": {"prompt_tokens": result.tokens_in, "completion_tokens": result.tokens_out,
                  "total_tokens": result.tokens_in + result.tokens_out},
        "system_fingerprint": None,
    })
