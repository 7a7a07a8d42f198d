"""The OpenAI wire format: request validation, responses, errors."""
from __future__ import annotations

import orjson

from orchestration.models.registry import DATA_CLASSES
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
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise bad_request(f"The request body is not valid UTF-8 (byte {bad.start}).", code="invalid_json") from None
        if "depth limit" in str(exc):
            raise bad_request("The request body's JSON is nested too deeply.", code="invalid_json") from None
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
        message["content"] = result.output or None  # OpenAI sends null beside tool calls
    choice = {"index": 0, "message": message, "finish_reason": result.finish_reason, "logprobs": None}
    choices = [choice]
    upstream_choices = (result.raw or {}).get("choices")
    if isinstance(upstream_choices, list) and upstream_choices and isinstance(upstream_choices[0], dict):
        # Pass-through: the upstream's extra fields (logprobs, refusal, ...) and choices beyond the first
        # (n > 1). The first choice's text and tool calls stay Podium's, as recorded (and maybe redacted).
        first = upstream_choices[0]
        choice["logprobs"] = first.get("logprobs")
        message.update({name: value for name, value in (first.get("message") or {}).items()
                        if name not in message and name not in ("content", "tool_calls")})
        choices += upstream_choices[1:]
    return orjson.dumps({
        "id": f"chatcmpl-{outcome.run_id.replace('-', '')}",
        "object": "chat.completion",
        "created": outcome.created,
        "model": outcome.model,
        "choices": choices,
        "usage": {"prompt_tokens": result.tokens_in, "completion_tokens": result.tokens_out,
                  "total_tokens": result.tokens_in + result.tokens_out},
        "system_fingerprint": None,
    })


class ChunkEncoder:
    """`chat.completion.chunk` server-sent events for one stream; the constant part is encoded once."""

    def __init__(self, *, run_id: str, created: int, model: str, include_usage: bool):
        self.prefix = (b'data: {"id":"chatcmpl-' + run_id.replace("-", "").encode()
                       + b'","object":"chat.completion.chunk","created":' + str(created).encode()
                       + b',"model":' + orjson.dumps(model) + b',"system_fingerprint":null,"choices":[')
        # With include_usage, OpenAI sends "usage": null on every chunk but the last.
        self.suffix = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"
        self.opened: set[int] = set()
        self.finished: set[int] = set()

    def delta(self, delta) -> bytes:
        """One upstream delta; the first of each choice also carries the assistant role, as OpenAI's do."""
        body: dict = {}
        if delta.index not in self.opened:
            self.opened.add(delta.index)
            body = {"role": "assistant", "content": ""}
        if delta.text:
            body["content"] = delta.text
        if delta.tool_calls:
            body["tool_calls"] = delta.tool_calls
        if delta.finish_reason:
            self.finished.add(delta.index)
        choice = {"index": delta.index, "delta": body, "logprobs": delta.logprobs,
                  "finish_reason": delta.finish_reason}
        return self.prefix + orjson.dumps(choice) + self.suffix

    def closing(self, finish_reason: str) -> bytes:
        """Finish chunks for the choices whose upstream never said how they ended."""
        choices = [{"index": index, "delta": {}, "logprobs": None, "finish_reason": finish_reason}
                   for index in sorted(self.opened - self.finished)]
        return self.prefix + orjson.dumps(choices)[1:-1] + self.suffix if choices else b""

    def usage(self, tokens_in: int, tokens_out: int) -> bytes:
        usage = {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}
        return self.prefix + b'],"usage":' + orjson.dumps(usage) + b"}\n\n"


DONE_EVENT = b"data: [DONE]\n\n"


def error_event(message: str, *, code: str = "upstream_error", type: str = "api_error") -> bytes:
    """How OpenAI ends a stream that failed midway: an error object, and no [DONE]."""
    return b"data: " + orjson.dumps({"error": {"message": message, "type": type, "param": None, "code": code}}) + b"\n\n"


def validate_embeddings_request(data: dict) -> tuple[str, dict, dict]:
    """(model, params sent upstream, metadata) or a 400 naming the bad field."""
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a string.", param="model")
    text = data.get("input")
    if not isinstance(text, (str, list)) or not text:
        raise bad_request("'input' is required: a string or a non-empty array of strings or token arrays.",
                          param="input")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise bad_request("'metadata' must be an object.", param="metadata")
    params = {name: value for name, value in data.items() if name not in PODIUM_FIELDS}
    return model, params, metadata


def podium_options(data: dict) -> dict:
    """The request's `podium` object as keyword arguments of services.chat_completion:
    `{"data_class": "sensitive", "cache": false}` -> data_class="sensitive", use_cache=False."""
    options = data.get("podium")
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise bad_request("'podium' must be an object.", param="podium")
    data_class = options.get("data_class")
    if data_class is not None and data_class not in DATA_CLASSES:
        raise bad_request(f"podium.data_class must be one of {', '.join(DATA_CLASSES)}.", param="podium.data_class")
    cache = options.get("cache", True)
    if not isinstance(cache, bool):
        raise bad_request("podium.cache must be true or false.", param="podium.cache")
    return {"data_class": data_class, "use_cache": cache}
