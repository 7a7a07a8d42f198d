from django.apps import AppConfig


class OrchestrationConfig(AppConfig):
    name = "orchestration"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from orchestration import signals  # noqa: F401  (registry cache invalidation)
        from orchestration import live, prometheus, telemetry  # noqa: F401  (signal receivers)
        from orchestration.access import login_throttle  # noqa: F401  (signal receivers)

        # Every live event also feeds the Prometheus counters and, when OTLP is configured, the traces.
        for observer in (prometheus.observe_event, telemetry.observe_event):
            if observer not in live.observers:
                live.observers.append(observer)
        telemetry.configure()
