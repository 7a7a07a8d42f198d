from django.apps import AppConfig


class TerminalConfig(AppConfig):
    """The terminal tools (podium_top, podium_run, podium_status): doors like api/ and dashboard/."""

    name = "terminal"
