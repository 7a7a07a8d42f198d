"""Drawing `podium_top`: a rich screen for terminals, plain lines for pipes and logs.

Model output never appears here; run targets and review reasons are shown as
plain `Text`, so nothing a client sent can inject rich markup.
"""
from __future__ import annotations

import time

from rich.console import Group
from rich.table import Table
from rich.text import Text

from terminal.top_state import ModelFigures, TopState

STATUS_STYLE = {"healthy": ("●", "green"), "degraded": ("◐", "yellow"), "circuit open": ("○", "bold red"),
                "disabled": ("–", "dim")}
RUN_STYLE = {"succeeded": "green", "failed": "red", "running": "cyan", "queued": "cyan",
             "awaiting_review": "yellow", "cancelled": "dim", "budget_exceeded": "red", "deadline_exceeded": "red"}


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1000:.2f}s" if value >= 10_000 else f"{value:.0f}ms"


def usd(value: float | None) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "$0"
    if value < 0.01:  # per-call costs of small models are millionths of a dollar
        return f"${value:.6f}"
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def sureness(row: ModelFigures) -> str:
    """The latest answer's confidence with how it was measured: `0.82 logprobs`, `0.70 prior`."""
    return "–" if row.confidence is None else f"{row.confidence:.2f} {row.confidence_method or 'prior'}"


def short_id(value: str) -> str:
    return value[:8]


def models_table(rows: list[ModelFigures], window_s: float) -> Table:
    table = Table(title=f"Models (last {window_s:g}s)", title_justify="left", expand=True, pad_edge=False)
    for header, justify in (("model", "left"), ("status", "left"), ("in-flight", "right"), ("calls", "right"),
                            ("req/s", "right"), ("tokens/s", "right"), ("cost/min", "right"),
                            ("p50", "right"), ("p95", "right"), ("errors", "right"), ("confidence", "left")):
        table.add_column(header, justify=justify, no_wrap=True)
    for row in rows:
        mark, style = STATUS_STYLE.get(row.status, ("?", ""))
        table.add_row(Text(row.alias), Text(f"{mark} {row.status}", style=style), str(row.in_flight),
                      str(row.calls), f"{row.req_s:.2f}", f"{row.tokens_s:.1f}", usd(row.cost_per_min),
                      ms(row.p50_ms), ms(row.p95_ms), str(row.errors), sureness(row))
    if not rows:
        table.add_row(Text("no models in the registry", style="dim"), *[""] * 10)
    return table


def runs_table(state: TopState, now: float) -> Table:
    table = Table(title="Latest runs", title_justify="left", expand=True, pad_edge=False)
    for header, justify in (("run", "left"), ("target", "left"), ("status", "left"), ("cost", "right"),
                            ("latency", "right"), ("seen", "right")):
        table.add_column(header, justify=justify, no_wrap=True)
    for run in state.latest_runs():
        table.add_row(short_id(run.id), Text(run.target), Text(run.status, style=RUN_STYLE.get(run.status, "")),
                      usd(run.cost_usd), ms(run.latency_ms), age(now - run.updated_at) + " ago")
    return table


def backlog_table(state: TopState, now: float) -> Table:
    count, oldest, rows = state.backlog()
    title = f"Review backlog: {count} open" + (f", oldest {age(oldest)}" if oldest is not None else "")
    table = Table(title=title, title_justify="left", expand=True, pad_edge=False)
    for header in ("review", "run", "reason", "status", "age"):
        table.add_column(header, no_wrap=True)
    for row in rows:
        table.add_row(short_id(row.id), short_id(row.run_id), Text(row.reason), Text(row.status),
                      age(now - row.created_at))
    return table


def render(state: TopState, *, source: str, now: float | None = None):
    now = time.time() if now is None else now
    header = Text.assemble(("Podium top", "bold"), f"  {source}  ", time.strftime("%H:%M:%S", time.localtime(now)),
                           (f"  {state.events_seen} events", "dim"), ("   q quits", "dim"))
    lower = Table.grid(expand=True, padding=(0, 2))
    lower.add_column(ratio=3)
    lower.add_column(ratio=2)
    lower.add_row(runs_table(state, now), backlog_table(state, now))
    return Group(header, models_table(state.figures(), state.window_s), lower)


def plain_lines(state: TopState, *, now: float | None = None) -> list[str]:
    """One block for a log or a pipe: a line per model, then runs and backlog."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    lines = [f"{stamp} podium top ({state.window_s:g}s window)"]
    for row in state.figures():
        lines.append(f"  model {row.alias:<20} {row.status:<12} in-flight={row.in_flight} calls={row.calls} "
                     f"req/s={row.req_s:.2f} tokens/s={row.tokens_s:.1f} cost/min={usd(row.cost_per_min)} "
                     f"p50={ms(row.p50_ms)} p95={ms(row.p95_ms)} errors={row.errors} confidence={sureness(row)}")
    runs = state.latest_runs()
    if runs:
        lines.append("  runs  " + ", ".join(f"{short_id(r.id)} {r.target} {r.status}" for r in runs[:5]))
    count, oldest, _ = state.backlog()
    lines.append(f"  reviews open={count}" + (f" oldest={age(oldest)}" if oldest is not None else ""))
    return lines
