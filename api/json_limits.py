"""How deep a JSON body may nest, for /v1 and /api alike (no DRF here: /v1 imports it on its hot path).

orjson parses up to 1,024 levels; rows that deep later fail wherever Python recurses (serialising a
run record, the admin, DRF's renderer). 64 is far more than any real request needs: a workflow spec of
20 nested nodes is ~45 levels deep, a chat with image parts 5.
"""
from __future__ import annotations

MAX_DEPTH = 64
DEPTH_ERROR = f"The JSON is nested deeper than {MAX_DEPTH} levels."


def json_too_deep(body: bytes, value) -> bool:
    """json_depth_exceeds(value) for the parsed `body`, skipping the walk when the body has too few
    brackets to nest that deep (counting a short body's bytes costs less than walking its containers)."""
    if len(body) <= 4096 and body.count(b"{") + body.count(b"[") <= MAX_DEPTH:
        return False
    return json_depth_exceeds(value)


def json_depth_exceeds(value, limit: int = MAX_DEPTH) -> bool:
    """True when containers nest deeper than `limit` (the outermost is level 1); for orjson's output.

    Level by level and without recursion (deep input must not recurse); it visits only the children of
    containers, so a chat body costs about a microsecond.
    """
    if type(value) is not dict and type(value) is not list:
        return False
    level = [value]
    for _ in range(limit):
        nested = [child for item in level for child in (item.values() if type(item) is dict else item)
                  if type(child) is dict or type(child) is list]
        if not nested:
            return False
        level = nested
    return True

NUL_ERROR = "The JSON holds a NUL character (\\u0000), which PostgreSQL cannot store in text."


def json_has_nul(body: bytes, value) -> bool:
    """True when a string (or key) in the parsed `value` of `body` holds U+0000.

    A byte search first (a few nanoseconds a kilobyte): the walk runs only when the escape is there,
    since JSON cannot carry a raw NUL; a literal backslash-u-0000 in text does not count."""
    if b"\\u0000" not in body:
        return False
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is str:
            if "\x00" in item:
                return True
        elif type(item) is dict:
            stack.extend(item)
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return False
