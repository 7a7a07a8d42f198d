from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "observability"

    def ready(self) -> None:
        """The one place that registers live-event observers, in every process that publishes events."""
        from observability import metrics_exchange, prometheus, telemetry
        from observability import scrape  # noqa: F401  (its system check)
        from observability.metrics_window import local_window
        from observability.origin import stamp_origin
        from orchestration import live

        def observe_metrics(event: dict) -> None:
            local_window.observe(event)
            metrics_exchange.ensure_started()

        # Every live event feeds the Prometheus counters and, when OTLP is configured, the traces; it is
        # numbered for its receivers (origin) and feeds this process's metrics window.
        for observer in (prometheus.observe_event, telemetry.observe_event, stamp_origin, observe_metrics):
            if observer not in live.observers:
                live.observers.append(observer)
        telemetry.configure()
