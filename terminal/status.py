"""`podium_status`: the registry and a health summary, with an exit code cron and probes can read.

A provider is *reachable* when its base URL answers HTTP at all below 500 within the timeout
(a 401 still proves the server is there, and is reported as a rejected key); mock providers
are always reachable, disabled ones are skipped. Checks run concurrently, so the command takes
about one timeout at worst however many providers there are.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta

import httpx
from observability.health import infrastructure_checks
from orchestration.models import LLMModel, Provider, RouteAlias, Step, Workflow
from orchestration.reviews.selectors import review_backlog
from terminal.top_view import age, ms

EXIT_OK = 0
EXIT_UNREACHABLE = 1
RECENT_S = 15 * 60


@dataclass
class ProviderCheck:
    name: str
    kind: str
    base_url: str
    enabled: bool
    models: list[str] = field(default_factory=list)
    reachable: bool | None = None  # None: not checked (disabled)
    detail: str = ""
    latency_ms: float | None = None


@dataclass
class ModelHealth:
    alias: str
    provider: str
    tier: str
    enabled: bool
    calls: int = 0
    failures: int = 0
    p95_ms: float | None = None


@dataclass
class StatusReport:
    providers: list[ProviderCheck]
    models: list[ModelHealth]
    routes: int
    workflows: int | None
    checks: dict[str, str]
    reviews_open: int
    oldest_review_age_s: float | None

    @property
    def unreachable(self) -> list[ProviderCheck]:
        return [p for p in self.providers if p.reachable is False]

    @property
    def exit_code(self) -> int:
        return EXIT_UNREACHABLE if self.unreachable or any(v != "ok" for v in self.checks.values()) else EXIT_OK

    def as_dict(self) -> dict:
        return {"ok": self.exit_code == EXIT_OK, "providers": [asdict(p) for p in self.providers],
                "models": [asdict(m) for m in self.models], "routes": self.routes, "workflows": self.workflows,
                "checks": self.checks, "reviews": {"open": self.reviews_open,
                                                   "oldest_age_s": self.oldest_review_age_s}}


def probe_request(kind: str, base_url: str, api_key: str) -> tuple[str, dict[str, str]]:
    """The cheapest request that proves a provider's server answers: its model list."""
    base = base_url.rstrip("/")
    if kind == "anthropic":
        root = base[:-3] if base.endswith("/v1") else base
        headers = {"anthropic-version": "2023-06-01", **({"x-api-key": api_key} if api_key else {})}
        return root + "/v1/models", headers
    if kind == "ollama":
        root = base[:-4] if base.endswith("/api") else base
        return root + "/api/tags", {}
    return base + "/models", ({"authorization": f"Bearer {api_key}"} if api_key else {})


async def check_provider(client: httpx.AsyncClient, check: ProviderCheck, api_key_env: str, timeout: float) -> None:
    if not check.enabled:
        check.detail = "disabled (not checked)"
        return
    if check.kind == "mock":
        check.reachable, check.detail = True, "built in"
        return
    if not check.base_url:
        check.reachable, check.detail = False, "no base URL"
        return
    url, headers = probe_request(check.kind, check.base_url, os.environ.get(api_key_env, "") if api_key_env else "")
    started = time.perf_counter()
    try:
        response = await client.get(url, headers=headers, timeout=timeout)
    except httpx.TimeoutException:
        check.reachable, check.detail = False, f"no answer within {timeout:g}s"
        return
    except httpx.HTTPError as exc:
        check.reachable, check.detail = False, f"cannot connect ({type(exc).__name__})"
        return
    check.latency_ms = (time.perf_counter() - started) * 1000
    status = response.status_code
    check.reachable = status < 500
    if status in (401, 403):
        check.detail = f"HTTP {status}: reachable, but the key was rejected" + (
            "" if api_key_env and os.environ.get(api_key_env) else f" (${api_key_env or 'no key variable'} is not set)")
    else:
        check.detail = f"HTTP {status}"


async def check_providers(checks: list[tuple[ProviderCheck, str]], timeout: float) -> None:
    # A plain client: a one-shot command has no pool worth sharing, and must not follow redirects away.
    async with httpx.AsyncClient(follow_redirects=False) as client:
        await asyncio.gather(*(check_provider(client, check, env, timeout) for check, env in checks))


def build_report(*, timeout: float = 3.0) -> StatusReport:
    """Read the registry and recent traffic (a handful of queries), then probe providers concurrently."""
    from django.db.models import Count, Q
    from django.utils import timezone

    checks = infrastructure_checks()
    providers = list(Provider.objects.order_by("name"))
    models = list(LLMModel.objects.select_related("provider").order_by("alias"))
    by_provider: dict[int, list[str]] = {}
    for model in models:
        by_provider.setdefault(model.provider_id, []).append(model.alias)
    provider_checks = [(ProviderCheck(name=p.name, kind=p.kind, base_url=p.base_url, enabled=p.enabled,
                                      models=by_provider.get(p.pk, [])), p.api_key_env) for p in providers]
    asyncio.run(check_providers(provider_checks, timeout))

    since = timezone.now() - timedelta(seconds=RECENT_S)
    traffic = {row["model_alias"]: row for row in Step.objects.filter(node_type="call", finished_at__gte=since)
               .values("model_alias").annotate(calls=Count("id"), failures=Count("id", filter=Q(status="failed")))}
    latencies: dict[str, list[float]] = {}
    for alias, latency in (Step.objects.filter(node_type="call", finished_at__gte=since, status="succeeded",
                                               latency_ms__isnull=False)
                           .values_list("model_alias", "latency_ms")[:50_000]):
        latencies.setdefault(alias, []).append(latency)
    model_rows = []
    for model in models:
        seen = traffic.get(model.alias, {})
        values = sorted(latencies.get(model.alias, ()))
        model_rows.append(ModelHealth(
            alias=model.alias, provider=model.provider.name, tier=model.tier,
            enabled=model.enabled and model.provider.enabled, calls=seen.get("calls", 0),
            failures=seen.get("failures", 0),
            p95_ms=round(values[min(len(values) - 1, int(len(values) * 0.95))], 1) if values else None))

    backlog = review_backlog()
    oldest = (timezone.now() - backlog.oldest_open_at).total_seconds() if backlog.oldest_open_at else None
    return StatusReport(providers=[check for check, _ in provider_checks], models=model_rows,
                        routes=RouteAlias.objects.filter(enabled=True).count(),
                        workflows=Workflow.objects.count(), checks=checks, reviews_open=backlog.open,
                        oldest_review_age_s=oldest)


def print_report(report: StatusReport, console) -> None:
    """Tables for people; every status is spelled out, never shown by colour alone."""
    from rich.table import Table
    from rich.text import Text

    providers = Table(title="Providers", title_justify="left")
    for header in ("provider", "kind", "reachable", "detail", "models"):
        providers.add_column(header)
    for check in report.providers:
        mark = {True: ("yes", "green"), False: ("NO", "bold red"), None: ("skipped", "dim")}[check.reachable]
        detail = check.detail + (f" in {ms(check.latency_ms)}" if check.latency_ms is not None else "")
        providers.add_row(Text(check.name), check.kind, Text(mark[0], style=mark[1]), Text(detail),
                          Text(", ".join(check.models) or "–"))
    console.print(providers)

    models = Table(title=f"Models (last {RECENT_S // 60} min)", title_justify="left")
    for header, justify in (("model", "left"), ("provider", "left"), ("tier", "left"), ("enabled", "left"),
                            ("calls", "right"), ("failures", "right"), ("p95", "right")):
        models.add_column(header, justify=justify)
    for model in report.models:
        models.add_row(Text(model.alias), Text(model.provider), model.tier, "yes" if model.enabled else "no",
                       str(model.calls), str(model.failures), ms(model.p95_ms))
    console.print(models)

    checks = ", ".join(f"{name} {value}" for name, value in report.checks.items())
    console.print(f"{checks}; {report.routes} route aliases; {report.workflows} workflows; "
                  f"{report.reviews_open} open reviews"
                  + (f" (oldest {age(report.oldest_review_age_s)})" if report.oldest_review_age_s is not None else ""),
                  highlight=False)
    console.print("status: ok" if report.exit_code == EXIT_OK else "status: UNHEALTHY", highlight=False)
