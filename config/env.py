"""Typed readers for environment variables: fail loudly, name the variable."""
import ipaddress
import os
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true/false)")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_url(name: str, schemes: set[str]) -> str:
    """A URL whose scheme is one of `schemes`, or "" when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return ""
    parsed = urlparse(raw)
    if parsed.scheme not in schemes or not (parsed.hostname or parsed.path):
        allowed = ", ".join(sorted(schemes))
        raise ImproperlyConfigured(f"{name} is not a valid URL (expected a scheme among: {allowed})")
    return raw


def env_networks(name: str, default: str) -> list:
    """Comma-separated CIDR networks ("none" for an empty list)."""
    raw = os.environ.get(name, "").strip() or default
    if raw.lower() == "none":
        return []
    try:
        return [ipaddress.ip_network(item.strip(), strict=False) for item in raw.split(",") if item.strip()]
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a comma-separated list of networks "
                                   "(e.g. 10.0.0.0/8,127.0.0.1/32)") from None


def share_metrics_dir() -> None:
    """Production processes of one host add their metrics up only when they share PROMETHEUS_MULTIPROC_DIR; a
    worker or server started by hand without it would count alone, unseen by /metrics. With REDIS_URL set
    (production) and the variable unset, default it to <PODIUM_VAR_DIR>/prometheus, as `make up` does. Call it
    before prometheus_client is imported (it reads the variable then)."""
    if os.environ.get("REDIS_URL") and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        var_dir = os.environ.get("PODIUM_VAR_DIR") or os.path.join(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), "var")
        path = os.path.join(var_dir, "prometheus")
        os.makedirs(path, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
