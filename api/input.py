"""Bad input on /api gets a clear 4xx, never a 500: bounded JSON bodies and strict input serializers.

DRF's own JSON parser reads any size, turns invalid UTF-8 into a vague error and lets deeply
nested JSON reach Python's recursion limit (a 500). StrictJSONParser bounds all three.
"""
from __future__ import annotations

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import exceptions, parsers, serializers, status
from rest_framework.views import exception_handler as drf_exception_handler

MAX_DEPTH = 64  # a workflow spec of 20 nested nodes is ~45 levels deep


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "request_too_large"


def json_depth_exceeds(value, limit: int) -> bool:
    """True when containers nest deeper than `limit` (iterative: deep input must not recurse)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class StrictJSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.PODIUM["MAX_BODY_BYTES"]
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        if not body:
            return {}
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise exceptions.ParseError(f"The request body is not valid UTF-8 (byte {exc.start}).") from None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if "depth limit" in str(exc):
                raise exceptions.ParseError(f"The JSON is nested deeper than {MAX_DEPTH} levels.") from None
            raise exceptions.ParseError(f"The request body is not valid JSON: {exc}") from None
        if json_depth_exceeds(data, MAX_DEPTH):
            raise exceptions.ParseError(f"The JSON is nested deeper than {MAX_DEPTH} levels.")
        return data


def exception_handler(exc, context):
    """DRF's handler, plus Django's body-size refusal as a JSON 413 (not an HTML 400)."""
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")
    return drf_exception_handler(exc, context)


class RejectUnknownFields:
    """Mixin for input serializers: a misspelt field is a 400 naming it, not silently ignored."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)
