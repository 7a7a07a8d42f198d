"""Login throttling for every Django login form (the admin's too) that slows guessing down without ever
locking the right person out.

Failures are counted, in the cache, in buckets:
- one per (username, client address): after PODIUM_LOGIN_MAX_FAILURES failures each further attempt must
  wait 1, 2, 4 … seconds after the last one, up to PODIUM_LOGIN_MAX_DELAY_S. The address is part of
  the key, so guessing a username from one place never slows its owner down anywhere else;
- one per client address, any username: PODIUM_LOGIN_ADDRESS_MAX_FAILURES, then the same growing delays;
- one per known device. A successful login leaves a signed cookie in the browser naming the user (OWASP's
  "device cookie"). An attempt that carries one for the username typed skips the two buckets above and
  is counted against the cookie alone: the owner's usual browser gets in even while a guesser shares the
  owner's address (an office NAT, a reverse proxy) or hammers the username. A stolen or guessed password
  is still needed; a guesser has no such cookie, and one that has stolen it meets the same delays.
The client address is the one behind trusted proxies (orchestration/access/client_address.py). The buckets
depend only on what was typed, never on whether the user exists, so a refusal says nothing about that.
The backend comes first in AUTHENTICATION_BACKENDS: raising PermissionDenied there stops Django from
checking the password at all. A refusal counts as a failure: a client that does not wait only waits longer
(a person reads "try again in 2 seconds" and does; a script hammering away soon waits the maximum).
Counts are forgotten a day after the last failure. With Redis as the cache every process shares them;
with the cache unreachable nobody is throttled (a cache outage must not lock staff out).
"""
from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core import signing
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.dispatch import receiver
from django.utils.deprecation import MiddlewareMixin

from orchestration.access.client_address import client_address

logger = logging.getLogger(__name__)

DEVICE_COOKIE = "podium_device"
DEVICE_SALT = "podium.login.device"
DEVICE_MAX_AGE_S = 180 * 24 * 3600
DEVICE_MAX_USERS = 5  # a browser shared by a few staff members keeps a device entry for each
FORGET_AFTER_S = 24 * 3600
RETRY_AFTER_ATTR = "podium_login_retry_after"
NEW_DEVICE_ATTR = "podium_device_cookie"


@dataclass(frozen=True)
class Bucket:
    key: str
    free_failures: int


def _digest(text: str) -> str:
    # Hashed: usernames typed into a login form may be anything, including someone's password.
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _user_digest(username: str | None) -> str:
    return _digest((username or "").lower())


def _known_devices(request) -> dict[str, str]:
    """user digest -> device nonce, from the request's device cookie when its signature holds."""
    raw = request.COOKIES.get(DEVICE_COOKIE) if request is not None else None
    if not raw:
        return {}
    try:
        entries = signing.loads(raw, salt=DEVICE_SALT, max_age=DEVICE_MAX_AGE_S)
    except signing.BadSignature:
        return {}
    if not isinstance(entries, list):
        return {}
    return {entry[0]: entry[1] for entry in entries
            if isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) for part in entry)}


def _pair_bucket(request, username: str | None) -> Bucket:
    address = client_address(request) or "unknown"
    return Bucket(f"podium:login:pair:{_digest(_user_digest(username) + '|' + address)}",
                  settings.PODIUM_LOGIN_MAX_FAILURES)


def _device_bucket(request, username: str | None) -> Bucket | None:
    nonce = _known_devices(request).get(_user_digest(username))
    return Bucket(f"podium:login:device:{_digest(nonce)}", settings.PODIUM_LOGIN_MAX_FAILURES) if nonce else None


def buckets_for(request, username: str | None) -> list[Bucket]:
    """Where an attempt is checked and its failure counted: the known device's, else (user, address) and address."""
    device = _device_bucket(request, username)
    if device:
        return [device]
    address = client_address(request) or "unknown"
    return [_pair_bucket(request, username),
            Bucket(f"podium:login:addr:{address}", settings.PODIUM_LOGIN_ADDRESS_MAX_FAILURES)]


def delay_after(failures: int, free_failures: int) -> float:
    """How long to wait after the `failures`-th failure in a row: nothing, then 1, 2, 4 … s, capped."""
    if failures < free_failures:
        return 0.0
    return float(min(2 ** min(failures - free_failures, 30), settings.PODIUM_LOGIN_MAX_DELAY_S))


def retry_after(buckets: list[Bucket], now: float | None = None) -> int:
    """Whole seconds to wait before the next attempt may be checked; 0 when it may go ahead."""
    now = time.time() if now is None else now
    try:
        untils = cache.get_many([bucket.key + ":until" for bucket in buckets])
    except Exception:  # cache down: do not lock everyone out
        return 0
    wait = max((until - now for until in untils.values()), default=0.0)
    return math.ceil(wait) if wait > 0 else 0


def record_failure(buckets: list[Bucket], now: float | None = None) -> None:
    now = time.time() if now is None else now
    try:
        for bucket in buckets:
            failures = _increment(bucket.key + ":n")
            delay = delay_after(failures, bucket.free_failures)
            if delay:
                cache.set(bucket.key + ":until", now + delay, timeout=math.ceil(delay) + 1)
    except Exception:
        logger.warning("login throttle: the cache is unavailable, failure not counted")


def _increment(key: str) -> int:
    cache.add(key, 0, timeout=FORGET_AFTER_S)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=FORGET_AFTER_S)
        return 1
    cache.touch(key, FORGET_AFTER_S)
    return count


def forget(buckets: list[Bucket]) -> None:
    try:
        cache.delete_many([bucket.key + suffix for bucket in buckets for suffix in (":n", ":until")])
    except Exception:
        pass


def _username(credentials: dict) -> str | None:
    from django.contrib.auth import get_user_model

    return credentials.get(get_user_model().USERNAME_FIELD) or credentials.get("username")


class LoginThrottleBackend:
    """Refuses to check a password while its buckets are waiting out a delay; never grants."""

    def authenticate(self, request, **credentials):
        wait = retry_after(buckets_for(request, _username(credentials)))
        if wait:
            if request is not None:
                setattr(request, RETRY_AFTER_ATTR, wait)
            logger.warning("login refused: too many failed attempts, retry in %ss", wait)
            raise PermissionDenied("too many failed login attempts")
        return None
    # No get_user(): sessions (and test clients' force_login) must name a backend that loads users.


def throttled_login_error(request) -> ValidationError | None:
    """What a login form says instead of "wrong password" while this request is throttled, else None."""
    wait = getattr(request, RETRY_AFTER_ATTR, 0)
    if wait:
        return ValidationError(f"Too many failed login attempts. Try again in {wait} second"
                               f"{'' if wait == 1 else 's'}.", code="throttled")
    return None


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, saying when to try again instead of "wrong password" while throttled."""

    def get_invalid_login_error(self):
        return throttled_login_error(self.request) or super().get_invalid_login_error()


class LoginThrottleMiddleware(MiddlewareMixin):
    """Puts a refusal's wait into the response (429 + Retry-After) and the device cookie into the browser."""

    def process_response(self, request, response):
        wait = getattr(request, RETRY_AFTER_ATTR, 0)
        if wait and response.status_code == 200:
            response.status_code = 429
            response.reason_phrase = "Too Many Requests"
            response["Retry-After"] = str(wait)
        cookie = getattr(request, NEW_DEVICE_ATTR, None)
        if cookie:
            response.set_cookie(DEVICE_COOKIE, cookie, max_age=DEVICE_MAX_AGE_S, httponly=True, samesite="Lax",
                                secure=settings.SESSION_COOKIE_SECURE)
        return response


def device_cookie_after_login(request, username: str) -> str:
    """The device cookie after `username` logged in: a fresh nonce for them, their older entries kept."""
    user = _user_digest(username)
    others = [[digest, nonce] for digest, nonce in _known_devices(request).items() if digest != user]
    entries = [[user, secrets.token_urlsafe(16)], *others][:DEVICE_MAX_USERS]
    return signing.dumps(entries, salt=DEVICE_SALT)


@receiver(user_login_failed)
def count_failure(sender, credentials, request=None, **kwargs):
    buckets = buckets_for(request, _username(credentials))
    record_failure(buckets)
    if getattr(request, RETRY_AFTER_ATTR, 0):  # refused: tell the wait this refusal itself added
        setattr(request, RETRY_AFTER_ATTR, retry_after(buckets) or 1)


@receiver(user_logged_in)
def clear_failures(sender, request, user, **kwargs):
    if request is None:
        return
    username = user.get_username()
    # The count this login was checked against: the device's, else the (user, address) pair's. Never the
    # address's (a guesser could clear it with an account of their own), nor the pair's after a device login
    # (a guesser at the same address would be let off).
    forget(buckets_for(request, username)[:1])
    setattr(request, NEW_DEVICE_ATTR, device_cookie_after_login(request, username))
