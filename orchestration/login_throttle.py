"""Login rate limiting for every Django login form (the admin's too), kept in the cache.

After PODIUM_LOGIN_MAX_FAILURES failed attempts for one username, or five times as many from one
address (many people may share one), within PODIUM_LOGIN_LOCKOUT_S, further attempts are refused — even with the right password — until the
window passes. The backend comes first in AUTHENTICATION_BACKENDS: raising PermissionDenied there
stops Django from trying the password at all. Failures are counted from the `user_login_failed`
signal; a successful login clears the username's count. With Redis as the cache the counts are
shared by every process.
"""
from __future__ import annotations

import hashlib
import logging

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver

logger = logging.getLogger(__name__)


def _cache_keys(username: str | None, address: str | None) -> list[str]:
    keys = []
    if username:
        # Hashed: usernames typed into a login form may be anything, including someone's password.
        keys.append("podium:login:user:" + hashlib.sha256(username.lower().encode()).hexdigest()[:32])
    if address:
        keys.append("podium:login:addr:" + address)
    return keys


def _address(request) -> str | None:
    return request.META.get("REMOTE_ADDR") if request is not None else None


def _username(credentials: dict) -> str | None:
    from django.contrib.auth import get_user_model

    return credentials.get(get_user_model().USERNAME_FIELD) or credentials.get("username")


def is_locked(username: str | None, address: str | None) -> bool:
    keys = _cache_keys(username, address)
    try:
        counts = cache.get_many(keys)
    except Exception:  # cache down: do not lock everyone out
        return False
    limit = settings.PODIUM_LOGIN_MAX_FAILURES
    return any(count >= (limit * 5 if key.startswith("podium:login:addr:") else limit)
               for key, count in counts.items())


class LoginThrottleBackend:
    """Refuses to authenticate while the username or the address is locked out; never grants."""

    def authenticate(self, request, **credentials):
        username = _username(credentials)
        if is_locked(username, _address(request)):
            logger.warning("login refused: too many failed attempts")
            raise PermissionDenied("too many failed login attempts")
        return None
    # No get_user(): sessions (and test clients' force_login) must name a backend that loads users.


@receiver(user_login_failed)
def count_failure(sender, credentials, request=None, **kwargs):
    for key in _cache_keys(_username(credentials), _address(request)):
        try:
            if not cache.add(key, 1, timeout=settings.PODIUM_LOGIN_LOCKOUT_S):
                cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=settings.PODIUM_LOGIN_LOCKOUT_S)
        except Exception:
            return


@receiver(user_logged_in)
def clear_failures(sender, request, user, **kwargs):
    try:
        cache.delete_many(_cache_keys(user.get_username(), None))
    except Exception:
        pass
