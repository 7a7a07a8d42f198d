"""Metrics, traces, readiness and live-event observers: how Podium is watched."""
