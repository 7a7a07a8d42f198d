"""Admin edits invalidate the cached registry and API-key snapshots in every process."""
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from orchestration.models import APIKey, LLMModel, Provider, RouteAlias
from orchestration.registry import bump_version


@receiver([post_save, post_delete], sender=Provider)
@receiver([post_save, post_delete], sender=LLMModel)
@receiver([post_save, post_delete], sender=RouteAlias)
@receiver([post_save, post_delete], sender=APIKey)
def registry_changed(**kwargs) -> None:
    bump_version()
