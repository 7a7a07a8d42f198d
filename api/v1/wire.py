"""The OpenAI wire format: request validation, responses, errors."""
from __future__ import annotations

import orjson

from api.json_limits import DEPTH_ERROR, NUL_ERROR, json_has_nul, json_too_deep
from orchestration.access.apikeys import KeyInfo
from orchestration.errors import GatewayError
from orchestration.gateway.chat import ChatOutcome
from orchestration.models.registry import DATA_CLASSES

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Podium's own request fields; never sent upstream.
PODIUM_FIELDS = {"model", "messages", "stream", "stream_options", "metadata", "podium"}
MAX_MODEL_NAME = 256
INT32_MAX = 2**31 - 1


def error_body(exc: GatewayError) -> bytes:
    return orjson.dumps({"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}})


def bad_request(message: str, *, param: str | None = None, code: str = "invalid_request") -> GatewayError:
    return GatewayError(message, code=code, param=param)


def parse_json(body: bytes) -> dict:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise bad_request(f"The request body is not valid UTF-8 (byte {bad.start}).", code="invalid_json") from None
        if "depth limit" in str(exc):
            raise bad_request(DEPTH_ERROR, code="invalid_json") from None
        raise bad_request(f"The request body is not valid JSON: {exc}.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    if json_too_deep(body, data):  # orjson allows 1,024 levels; Python code downstream recurses
        raise bad_request(DEPTH_ERROR, code="invalid_json")
    if json_has_nul(body, data):  # every call is recorded; PostgreSQL could not record this one
        raise bad_request(NUL_ERROR, code="invalid_json")
    return data


def invalid(param: str, expected: str) -> GatewayError:
    return bad_request(f"'{param}' must be {expected}.", param=param)


def require(ok: bool, param: str, expected: str) -> None:
    if not ok:
        raise invalid(param, expected)


def is_number(value) -> bool:
    return type(value) is int or type(value) is float  # bool is an int, and not a number here


def is_object(value) -> bool:
    return type(value) is dict


def is_string_list(value) -> bool:
    return type(value) is list and all(type(item) is str for item in value)


# The checks below run on every call that sets the field: conditions inline, messages built only on failure.
def number_between(low: float, high: float):
    expected = f"a number from {low} to {high}"

    def check(name: str, value) -> None:
        if not ((type(value) is int or type(value) is float) and low <= value <= high):
            raise invalid(name, expected)
    return check


def integer_between(low: int, high: int):
    expected = f"an integer from {low} to {high}"

    def check(name: str, value) -> None:
        if not (type(value) is int and low <= value <= high):
            raise invalid(name, expected)
    return check


def boolean(name: str, value) -> None:
    if type(value) is not bool:
        raise invalid(name, "true or false")


def string(name: str, value) -> None:
    if type(value) is not str:
        raise invalid(name, "a string")


def object_of(fields: dict):
    """An object whose listed fields (when present and not null) pass their checks; others pass through."""
    def check(name: str, value) -> None:
        if type(value) is not dict:
            raise invalid(name, "an object")
        for field, field_check in fields.items():
            if value.get(field) is not None:
                field_check(f"{name}.{field}", value[field])
    return check


def stop_sequences(name: str, value) -> None:
    require(type(value) is str or is_string_list(value), name, "a string or an array of strings")


def logit_bias(name: str, value) -> None:
    require(is_object(value) and all(is_number(bias) and -100 <= bias <= 100 for bias in value.values()), name,
            "an object mapping token ids to numbers from -100 to 100")


FUNCTION = object_of({"name": string, "description": string, "parameters": object_of({})})


def tools(name: str, value) -> None:
    require(type(value) is list, name, "an array of tools")
    for index, tool in enumerate(value):
        path = f"{name}[{index}]"
        require(is_object(tool) and type(tool.get("type")) is str, path, "an object with a string 'type'")
        if tool["type"] == "function":
            require(is_object(tool.get("function")) and type(tool["function"].get("name")) is str,
                    f"{path}.function", "an object with a string 'name'")
            FUNCTION(f"{path}.function", tool["function"])


def tool_choice(name: str, value) -> None:
    if type(value) is str:
        return
    require(is_object(value) and type(value.get("type")) is str, name, "a string or an object with a string 'type'")
    if value["type"] == "function":
        require(is_object(value.get("function")) and type(value["function"].get("name")) is str,
                f"{name}.function", "an object with a string 'name'")


def response_format(name: str, value) -> None:
    require(is_object(value) and type(value.get("type")) is str, name, "an object with a string 'type'")
    if value.get("json_schema") is not None:
        require(is_object(value["json_schema"]), f"{name}.json_schema", "an object")


# The request fields Podium or one of its adapters reads (or OpenAI bounds), checked when present and not
# null; any other field passes through to OpenAI-compatible upstreams untouched (within the depth limit).
CHAT_PARAMS = {
    "temperature": number_between(0, 2),
    "top_p": number_between(0, 1),
    "top_k": integer_between(0, INT32_MAX),
    "n": integer_between(1, 128),
    "max_tokens": integer_between(1, INT32_MAX),
    "max_completion_tokens": integer_between(1, INT32_MAX),
    "presence_penalty": number_between(-2, 2),
    "frequency_penalty": number_between(-2, 2),
    "seed": integer_between(-2**63, 2**63 - 1),
    "logprobs": boolean,
    "top_logprobs": integer_between(0, 20),
    "logit_bias": logit_bias,
    "stream": boolean,
    "stream_options": object_of({"include_usage": boolean}),
    "parallel_tool_calls": boolean,
    "store": boolean,
    "user": string,
    "stop": stop_sequences,
    "tools": tools,
    "tool_choice": tool_choice,
    "response_format": response_format,
}
EMBEDDINGS_PARAMS = {
    "dimensions": integer_between(1, INT32_MAX),
    "encoding_format": string,
    "user": string,
}

# Content part type -> the object field it carries and that field's check. Podium redacts and translates
# parts it knows; an unknown part type could carry text past PII redaction, so it is a 400.
CONTENT_PARTS = {
    "text": ("text", string),
    "refusal": ("refusal", string),
    "image_url": ("image_url", object_of({"url": string, "detail": string})),
    "input_audio": ("input_audio", object_of({"data": string, "format": string})),
    "file": ("file", object_of({"file_id": string, "file_data": string, "filename": string})),
}
TOOL_CALL = object_of({"id": string, "type": string, "function": object_of({"name": string, "arguments": string})})


def tool_calls(name: str, value) -> None:
    require(type(value) is list, name, "an array of tool calls")
    for index, call in enumerate(value):
        TOOL_CALL(f"{name}[{index}]", call)


def check_params(data: dict, rules: dict) -> None:
    for name, value in data.items():
        rule = rules.get(name)
        if rule is not None and value is not None:
            rule(name, value)


def check_model(data: dict) -> str:
    model = data.get("model")
    if type(model) is not str or not model or len(model) > MAX_MODEL_NAME:
        raise bad_request(f"'model' is required: a string of at most {MAX_MODEL_NAME} characters.", param="model")
    return model


def check_metadata(data: dict) -> dict:
    metadata = data.get("metadata")
    if metadata is None:
        return {}
    if type(metadata) is not dict:  # [], "" and false too: not an empty object
        raise bad_request("'metadata' must be an object.", param="metadata")
    return metadata


def check_content(path: str, content) -> None:
    require(type(content) is list, path, "a string or an array of content parts")
    for index, part in enumerate(content):
        # The common parts are accepted without building their paths; anything else takes the precise checks.
        kind = part.get("type") if type(part) is dict else None
        if kind == "text" and type(part.get("text")) is str:
            continue
        if kind == "image_url" and type(image := part.get("image_url")) is dict and type(image.get("url")) is str \
                and type(image.get("detail", "")) is str:
            continue
        part_path = f"{path}[{index}]"
        if type(kind) is not str or kind not in CONTENT_PARTS:
            raise bad_request(f"'{part_path}' must be an object whose 'type' is one of "
                              f"{', '.join(CONTENT_PARTS)}.", param=part_path)
        field, check = CONTENT_PARTS[kind]
        require(field in part, f"{part_path}.{field}", f"present in a '{kind}' part")
        check(f"{part_path}.{field}", part[field])


MESSAGE_FIELDS = {"content": check_content, "name": string, "tool_call_id": string, "refusal": string,
                  "tool_calls": tool_calls, "function_call": object_of({"name": string, "arguments": string})}
MAY_BE_STRINGS = {"role", "content", "name", "tool_call_id", "refusal"}  # a string is all they need


def check_message(index: int, message) -> None:
    role = message.get("role") if type(message) is dict else None
    if type(role) is not str or role not in ROLES:
        raise bad_request(f"messages[{index}] must be an object with a 'role' among {', '.join(sorted(ROLES))}.",
                          param=f"messages[{index}]")
    for field, value in message.items():
        if value is None or type(value) is str and field in MAY_BE_STRINGS:  # the common case, first
            continue
        check = MESSAGE_FIELDS.get(field)
        if check is not None:
            check(f"messages[{index}].{field}", value)


def validate_chat_request(data: dict) -> tuple[str, list[dict], dict, dict]:
    """(model, messages, params sent upstream, metadata) or a 400 naming the bad field."""
    model = check_model(data)
    messages = data.get("messages")
    if type(messages) is not list or not messages:
        raise bad_request("'messages' is required and must be a non-empty array.", param="messages")
    for index, message in enumerate(messages):
        check_message(index, message)
    check_params(data, CHAT_PARAMS)
    metadata = check_metadata(data)
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


def is_token_list(value) -> bool:
    return type(value) is list and bool(value) and all(type(token) is int and 0 <= token <= INT32_MAX
                                                       for token in value)


def validate_embeddings_request(data: dict) -> tuple[str, dict, dict]:
    """(model, params sent upstream, metadata) or a 400 naming the bad field."""
    model = check_model(data)
    text = data.get("input")
    if not (type(text) is str and text or is_token_list(text) or type(text) is list and text and (
            all(type(item) is str and item for item in text) or all(is_token_list(item) for item in text))):
        raise bad_request("'input' is required: a non-empty string, an array of non-empty strings, an array of "
                          "token ids or an array of token id arrays.", param="input")
    check_params(data, EMBEDDINGS_PARAMS)
    metadata = check_metadata(data)
    params = {name: value for name, value in data.items() if name not in PODIUM_FIELDS}
    return model, params, metadata


def podium_options(data: dict, key: KeyInfo | None = None) -> dict:
    """The request's `podium` object as keyword arguments of gateway.chat.chat_completion:
    `{"data_class": "sensitive", "cache": false}` -> data_class="sensitive", use_cache=False.

    The one place a /v1 request's data class is decided: the request's, else the key's, else its team's
    default (`KeyInfo.default_data_class`); the policy (orchestration/engine/policy.py) applies it."""
    default_class = key.default_data_class if key is not None else None
    options = data.get("podium")
    if options is None:
        return {"data_class": default_class} if default_class else {}
    if not isinstance(options, dict):
        raise bad_request("'podium' must be an object.", param="podium")
    data_class = options.get("data_class")
    if data_class is not None and data_class not in DATA_CLASSES:
        raise bad_request(f"podium.data_class must be one of {', '.join(DATA_CLASSES)}.", param="podium.data_class")
    cache = options.get("cache", True)
    if not isinstance(cache, bool):
        raise bad_request("podium.cache must be true or false.", param="podium.cache")
    return {"data_class": data_class or default_class, "use_cache": cache}
