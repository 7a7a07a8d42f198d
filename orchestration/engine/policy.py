"""Data-class policy and PII redaction, applied before any provider call.

Data classes: a request may carry one (`RunContext.data_class`, e.g. "sensitive"; the gateway fills it
from the request, else the key, else the key's team). A model receives a class when:

  - the class is local-only (PODIUM_LOCAL_ONLY_DATA_CLASSES, default "sensitive,restricted", carried by the
    registry snapshot): the model lists it in `allowed_data_classes`, or its provider is local and the model
    lists no classes at all (an explicit list is the admin's word, also on a local model);
  - any other class: the model lists it, an empty list meaning public and internal.

A request without a data class is not restricted. A route alias keeps only the candidates the rule allows;
with none left it is refused (`RouteRefused`, naming the rule and each candidate's reason).

PII: before a call to a provider not marked local, message text is scanned for IBANs (mod-97
checked), payment card numbers (13-19 digits, Luhn checked), e-mail addresses and phone numbers
(9-15 digits, or any number written with a leading +), and each is replaced by a placeholder such
as `[EMAIL]`. Only the counts per kind are reported, never the values.
"""
from __future__ import annotations

import re

from orchestration.engine.types import ModelSpec, ProviderSpec

DEFAULT_DATA_CLASSES = frozenset({"public", "internal"})
DEFAULT_LOCAL_ONLY = frozenset({"sensitive", "restricted"})


class PolicyViolation(Exception):
    """The request's data class may not go to this model; raised before any call."""

    code = "data_class_not_allowed"

    def __init__(self, model: str, data_class: str, allowed: frozenset[str], *, message: str | None = None):
        super().__init__(message or f"The model '{model}' may not receive data of class '{data_class}' "
                         f"({rule_for(data_class, allowed)}).")
        self.model, self.data_class, self.allowed = model, data_class, allowed


class RouteRefused(PolicyViolation):
    """No candidate of a route alias may receive the request's data class."""

    def __init__(self, route: str, data_class: str, reasons: dict[str, str], local_only: bool):
        rule = (f"Data of class '{data_class}' goes only to local models or models that explicitly allow it"
                if local_only else f"Data of class '{data_class}' goes only to models that explicitly allow it")
        why = "; ".join(f"{alias}: {reason}" for alias, reason in reasons.items()) or "it has no enabled candidate"
        super().__init__(route, data_class, frozenset(), message=f"{rule}; route '{route}' has none: {why}.")
        self.route = route


def rule_for(data_class: str, allowed: frozenset[str]) -> str:
    return f"it allows: {', '.join(sorted(allowed))}" if allowed else f"class '{data_class}' is local-only"


def allowed_data_classes(model: ModelSpec) -> frozenset[str]:
    return frozenset(model.allowed_data_classes) or DEFAULT_DATA_CLASSES


def allows(model: ModelSpec, data_class: str | None, local_only: frozenset[str] = DEFAULT_LOCAL_ONLY) -> bool:
    if data_class is None or data_class in model.allowed_data_classes:
        return True
    if data_class in local_only:
        return model.provider.is_local and not model.allowed_data_classes
    return data_class in allowed_data_classes(model)


def refusal_reason(model: ModelSpec, data_class: str, local_only: frozenset[str] = DEFAULT_LOCAL_ONLY) -> str:
    """Why `model` may not receive `data_class` (for error messages; never called when it may)."""
    where = "local" if model.provider.is_local else "not local"
    if model.allowed_data_classes:
        return f"{where}, allows only {', '.join(sorted(model.allowed_data_classes))}"
    if data_class in local_only:
        return f"{where}, allows no '{data_class}' explicitly"
    return f"{where}, allows public and internal"


def check_data_class(model: ModelSpec, data_class: str | None,
                     local_only: frozenset[str] = DEFAULT_LOCAL_ONLY) -> None:
    if not allows(model, data_class, local_only):
        message = (f"Data of class '{data_class}' goes only to "
                   + ("local models or models that explicitly allow it" if data_class in local_only
                      else "models that explicitly allow it")
                   + f"; the model '{model.alias}' may not receive it ({refusal_reason(model, data_class, local_only)}).")
        raise PolicyViolation(model.alias, data_class, allowed_data_classes(model), message=message)


def filter_candidates(route: str, candidates: list[ModelSpec], data_class: str | None,
                      local_only: frozenset[str] = DEFAULT_LOCAL_ONLY) -> list[ModelSpec]:
    """The route's candidates that may receive the data class, in order; RouteRefused when none may."""
    if data_class is None:
        return candidates
    kept = [model for model in candidates if allows(model, data_class, local_only)]
    if not kept:
        raise RouteRefused(route, data_class, {m.alias: refusal_reason(m, data_class, local_only) for m in candidates},
                           data_class in local_only)
    return kept


# --- PII ------------------------------------------------------------------------------------------
IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)\b")
CARD_RE = re.compile(r"(?<![\d-])(?:\d{4}(?:[ -]\d{4}){3}(?:[ -]?\d{3})?|\d{4}[ -]\d{6}[ -]\d{5}|\d{13,19})(?![\d-])")
EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
PHONE_RE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,6}(?!\w)")
MAYBE_PII_RE = re.compile(r"[0-9@]")
DOTTED_QUAD_RE = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
PLACEHOLDERS = {"iban": "[IBAN]", "card": "[CARD]", "email": "[EMAIL]", "phone": "[PHONE]"}


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(compact: str) -> bool:
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _iban(match: re.Match) -> str | None:
    """The IBAN may be followed by a short upper-case word the pattern swallowed: try shorter prefixes."""
    groups = match.group(0).split(" ")
    for end in range(len(groups), 0, -1):
        if iban_valid("".join(groups[:end])):
            return PLACEHOLDERS["iban"] + (" " + " ".join(groups[end:]) if end < len(groups) else "")
    return None


def _card(match: re.Match) -> str | None:
    digits = re.sub(r"\D", "", match.group(0))
    return PLACEHOLDERS["card"] if 13 <= len(digits) <= 19 and luhn_valid(digits) else None


def _phone(match: re.Match) -> str | None:
    text = match.group(0)
    digits = sum(char.isdigit() for char in text)
    if DOTTED_QUAD_RE.match(text):
        return None  # an IPv4 address
    if text.startswith("+"):
        return PLACEHOLDERS["phone"] if 7 <= digits <= 15 else None
    separated = bool(re.search(r"[ .()-]", text))
    return PLACEHOLDERS["phone"] if separated and 9 <= digits <= 15 else None


# (kind, hint, pattern, replacement): the full patterns are slow to scan with Python's re, so each
# runs only on text where its cheap hint matched (most prompts hold none of the four).
DETECTORS = (
    ("iban", re.compile(r"[A-Z]{2}\d\d"), IBAN_RE, _iban),
    ("card", re.compile(r"\d\d\d\d[ -]?\d\d\d\d"), CARD_RE, _card),
    ("email", re.compile("@"), EMAIL_RE, lambda match: PLACEHOLDERS["email"]),
    ("phone", re.compile(r"\d[\d .()-]{7,}"), PHONE_RE, _phone),
)


def redact_text(text: str, counts: dict[str, int]) -> str:
    """The text with PII replaced; adds what it found to `counts` by kind."""
    if not MAYBE_PII_RE.search(text):
        return text  # no digit and no @: nothing to find, at C speed
    for kind, hint, pattern, replace in DETECTORS:
        if not hint.search(text):
            continue

        def substitute(match: re.Match, kind=kind, replace=replace) -> str:
            replacement = replace(match)
            if replacement is None:
                return match.group(0)
            counts[kind] = counts.get(kind, 0) + 1
            return replacement
        text = pattern.sub(substitute, text)
    return text


def redact_messages(messages: list[dict]) -> tuple[list[dict], dict[str, int]]:
    """Copies of the messages with PII redacted in their text, and counts per kind (empty: nothing found)."""
    counts: dict[str, int] = {}
    redacted = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            message = {**message, "content": redact_text(content, counts)}
        elif isinstance(content, list):
            parts = [{**part, "text": redact_text(part["text"], counts)}
                     if isinstance(part, dict) and isinstance(part.get("text"), str) else part for part in content]
            message = {**message, "content": parts}
        redacted.append(message)
    return (redacted, counts) if counts else (messages, counts)


def redact_json(value, counts: dict[str, int]):
    """Any JSON value with PII redacted in every string it holds (what Podium stores of a redacted prompt)."""
    if isinstance(value, str):
        return redact_text(value, counts)
    if isinstance(value, list):
        return [redact_json(item, counts) for item in value]
    if isinstance(value, dict):
        return {name: redact_json(item, counts) for name, item in value.items()}
    return value


def needs_redaction(provider: ProviderSpec) -> bool:
    return not provider.is_local
