"""Admin edits invalidate the cached registry and API-key snapshots in every process."""
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from orchestration.models import APIKey, LLMModel, Provider, RouteAlias, Team, TeamMembership
from orchestration.registry import bump_version


@receiver(m2m_changed, sender=Team.allowed_models.through)
@receiver(m2m_changed, sender=Team.allowed_route_aliases.through)
@receiver([post_save, post_delete], sender=Team)
@receiver([post_save, post_delete], sender=TeamMembership)
@receiver([post_save, post_delete], sender=Provider)
@receiver([post_save, post_delete], sender=LLMModel)
@receiver([post_save, post_delete], sender=RouteAlias)
@receiver([post_save, post_delete], sender=APIKey)
def registry_changed(**kwargs) -> None:
    bump_version()
