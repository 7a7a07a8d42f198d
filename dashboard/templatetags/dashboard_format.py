from django import template

register = template.Library()


@register.filter
def get_window(stats: dict, window: str):
    return stats.get(window)


@register.filter
def percent(value) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"
