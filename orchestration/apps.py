from django.apps import AppConfig


class OrchestrationConfig(AppConfig):
    name = "orchestration"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from orchestration import signals  # noqa: F401  (registry cache invalidation)
        from orchestration.access import login_throttle  # noqa: F401  (signal receivers)
        from orchestration.config_audit import connect as audit_configuration

        audit_configuration()  # every configuration change becomes an audit entry
