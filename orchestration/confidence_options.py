"""The confidence methods and the checks of their options: shared by the registry's model (admin validation),
the workflow spec and the engine, so it depends on nothing (see orchestration/engine/confidence.py for what
each method measures)."""
from __future__ import annotations

METHODS = ("auto", "logprobs", "self_consistency", "verifier", "prior")
MAX_SAMPLES = 10


def check_options(value, path: str) -> list[str]:
    """Errors of a `confidence` object (registry options or a workflow node's override)."""
    if not isinstance(value, dict):
        return [f"{path}: must be an object"]
    errors = []
    unknown = sorted(set(value) - {"method", "samples", "temperature", "verifier"})
    if unknown:
        errors.append(f"{path}: unknown field(s) {', '.join(unknown)}")
    if "method" in value and value["method"] not in METHODS:
        errors.append(f"{path}.method: must be one of {', '.join(METHODS)}")
    samples = value.get("samples", 3)
    if isinstance(samples, bool) or not isinstance(samples, int) or not 2 <= samples <= MAX_SAMPLES:
        errors.append(f"{path}.samples: must be a whole number from 2 to {MAX_SAMPLES}")
    temperature = value.get("temperature", 0.7)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        errors.append(f"{path}.temperature: must be a number from 0 to 2")
    if value.get("method") == "verifier" and not (isinstance(value.get("verifier"), str) and value.get("verifier")):
        errors.append(f"{path}.verifier: the judge model's alias is required for the verifier method")
    return errors
