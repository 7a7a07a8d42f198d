from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"

    def ready(self):
        from dashboard.hub import stamp_origin
        from orchestration import live, metrics_exchange
        from orchestration.metrics_window import local_window

        def observe_metrics(event: dict) -> None:
            local_window.observe(event)
            metrics_exchange.ensure_started()

        # Every process that publishes events numbers them and feeds its own metrics window.
        for observer in (stamp_origin, observe_metrics):
            if observer not in live.observers:
                live.observers.append(observer)
