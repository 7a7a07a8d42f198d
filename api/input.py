"""Bad input on /api gets a clear 4xx, never a 500: bounded JSON bodies and strict input serializers.

DRF's own JSON parser reads any size, turns invalid UTF-8 into a vague error and lets deeply
nested JSON reach Python's recursion limit (a 500). StrictJSONParser bounds all three, and refuses
the NUL character, which PostgreSQL cannot store (nor compare: api/url_limits.py refuses it in URLs).
"""
from __future__ import annotations

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import exceptions, parsers, serializers, status
from rest_framework.views import exception_handler as drf_exception_handler

from api.json_limits import DEPTH_ERROR, NUL_ERROR, json_has_nul, json_too_deep


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "request_too_large"


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
                raise exceptions.ParseError(DEPTH_ERROR) from None
            raise exceptions.ParseError(f"The request body is not valid JSON: {exc}") from None
        if json_too_deep(body, data):
            raise exceptions.ParseError(DEPTH_ERROR)
        if json_has_nul(body, data):
            raise exceptions.ParseError(NUL_ERROR)
        return data


def refuse_nul(form) -> None:
    """Form fields may carry JSON (a JSONField parses it later): refuse NUL raw and as a JSON escape."""
    for name, values in form.lists():
        if any("\x00" in text or "\\u0000" in text for text in (name, *values)):
            raise exceptions.ParseError(f"The form field {name[:40]!r} holds a NUL character, which PostgreSQL "
                                        "cannot store in text.")


class StrictFormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        refuse_nul(data)
        return data


class StrictMultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parsed = super().parse(stream, media_type, parser_context)
        refuse_nul(parsed.data)
        return parsed


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


def query_choices(request, name: str, choices) -> list[str]:
    """A filter's comma-separated values, each one of `choices` (a 400 naming them otherwise); [] when absent."""
    raw = request.query_params.get(name)
    if not raw:
        return []
    values = raw.split(",")
    unknown = [value for value in values if value not in choices]
    if unknown:
        raise serializers.ValidationError({name: [f"Unknown value {unknown[0][:40]!r}; choose from "
                                                  f"{', '.join(choices)}."]})
    return values
