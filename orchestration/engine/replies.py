"""Reading structured answers (scores, choices, plans) out of model replies, which are untrusted text."""
from __future__ import annotations

import json
import re

_SCORE_RE = r'"?{field}"?\s*[:=]\s*"?([0-9]*\.?[0-9]+)\s*(%|/\s*10\b|/\s*100\b)?'


def parse_json_value(text: str):
    """The first JSON object or array in a reply (bare, or inside a ```json fence), else None."""
    text = (text or "").strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fence:
        text = fence.group(1).strip()
    decoder = json.JSONDecoder()
    for start, char in enumerate(text):
        if char in "{[":
            try:
                value, _ = decoder.raw_decode(text[start:])
                return value
            except ValueError:
                continue
    return None


def parse_json_object(text: str) -> dict | None:
    value = parse_json_value(text)
    return value if isinstance(value, dict) else None


def parse_score(text: str, field: str = "score") -> float | None:
    """A score in [0, 1] from `{"score": 0.8}`, `score: 8/10`, `score = 80%`; None when there is none."""
    data = parse_json_object(text)
    value = data.get(field) if data else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _unit(float(value), "")
    match = re.search(_SCORE_RE.format(field=re.escape(field)), text or "", re.I)
    if not match:
        return None
    return _unit(float(match.group(1)), (match.group(2) or "").replace(" ", ""))


def _unit(value: float, scale: str) -> float:
    if scale == "%" or scale == "/100" or (not scale and value > 10):
        value /= 100
    elif scale == "/10" or value > 1:
        value /= 10
    return max(0.0, min(1.0, value))


def parse_subtasks(text: str, limit: int) -> list[str] | None:
    """Subtasks from `{"subtasks": [...]}` or a bare JSON list of strings (or of {"task": ...}); None if invalid."""
    value = parse_json_value(text)
    if isinstance(value, dict):
        value = value.get("subtasks")
    if not isinstance(value, list) or not value:
        return None
    tasks = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("task") or item.get("description")
        if not isinstance(item, str) or not item.strip(" .…"):
            return None  # empty, or the "..." of the prompt's own example echoed back
        tasks.append(item.strip())
    return tasks[:limit]
