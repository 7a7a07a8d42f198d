"""Login throttling slows guessing down without locking the right person out: growing delays per
(username, address), a ceiling per address, a device cookie for browsers that have logged in before, and
X-Forwarded-For believed only from trusted proxies."""
from __future__ import annotations

import ipaddress
import re
import secrets

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, RequestFactory, override_settings

from orchestration.access.client_address import client_address
from orchestration.access.login_throttle import DEVICE_COOKIE, Bucket, delay_after, record_failure, retry_after

RIGHT = "admin-password-1"


@pytest.fixture(autouse=True)
def clean_cache():
    """Each test starts with no failures counted (conftest already makes password hashing fast)."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def admin(db):
    return get_user_model().objects.create_superuser("admin", "admin@example.com", RIGHT)


def attempt(client: Client, username: str, password: str, address: str, **headers):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password},
                       REMOTE_ADDR=address, **headers)


def form_errors(response) -> list[str]:
    return re.findall(r'<p class="errornote">(.*?)</p>', response.content.decode(), flags=re.S)


def logged_in(response) -> bool:
    return response.status_code == 302


def known_device(address: str) -> Client:
    """The admin's own browser: it has logged in once (so it holds a device cookie) and logged out."""
    browser = Client()
    assert logged_in(attempt(browser, "admin", RIGHT, address))
    assert browser.cookies[DEVICE_COOKIE].value and browser.cookies[DEVICE_COOKIE]["httponly"]
    browser.post("/admin/logout/")
    return browser


# --- the findings -------------------------------------------------------------------------------------------------

def test_ten_wrong_passwords_for_admin_do_not_stop_the_right_password_from_a_known_device(admin):
    device = known_device("192.0.2.10")
    guesser = Client()
    for _ in range(10):
        assert not logged_in(attempt(guesser, "admin", "wrong", "192.0.2.10"))

    assert logged_in(attempt(device, "admin", RIGHT, "192.0.2.10"))
    # Without the device cookie the same address waits (the pair is being guessed at), with the time to wait...
    refused = attempt(Client(), "admin", RIGHT, "192.0.2.10")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert f"Try again in {refused['Retry-After']} second" in "".join(form_errors(refused))
    # ...and any other address is not slowed down at all.
    assert logged_in(attempt(Client(), "admin", RIGHT, "192.0.2.99"))


def test_fifty_random_username_failures_from_one_address_do_not_stop_the_admins_correct_login(admin):
    device = known_device("198.51.100.7")
    guesser = Client()
    for _ in range(settings.PODIUM_LOGIN_ADDRESS_MAX_FAILURES + 5):
        attempt(guesser, "guess-" + secrets.token_hex(4), "wrong", "198.51.100.7")

    assert attempt(guesser, "guess-" + secrets.token_hex(4), "wrong", "198.51.100.7").status_code == 429
    assert logged_in(attempt(device, "admin", RIGHT, "198.51.100.7"))
    assert logged_in(attempt(Client(), "admin", RIGHT, "198.51.100.8"))


@override_settings(PODIUM={**settings.PODIUM, "TRUSTED_PROXIES": [ipaddress.ip_network("127.0.0.1/32")]})
def test_behind_a_trusted_proxy_fifty_failures_from_one_client_do_not_stop_other_clients(admin):
    guesser = Client()
    for _ in range(settings.PODIUM_LOGIN_ADDRESS_MAX_FAILURES + 5):
        attempt(guesser, "guess-" + secrets.token_hex(4), "wrong", "127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.66")
    assert attempt(guesser, "admin", "wrong", "127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.66").status_code == 429

    assert logged_in(attempt(Client(), "admin", RIGHT, "127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.5"))


def test_without_trusted_proxies_fifty_failures_through_the_proxy_slow_every_new_browser_behind_it(admin):
    device = known_device("127.0.0.1")
    for _ in range(settings.PODIUM_LOGIN_ADDRESS_MAX_FAILURES + 5):
        attempt(Client(), "guess-" + secrets.token_hex(4), "wrong", "127.0.0.1",
                HTTP_X_FORWARDED_FOR="203.0.113.66")
    # The header is not believed, so all of them share the proxy's address: PODIUM_TRUSTED_PROXIES fixes that.
    assert attempt(Client(), "admin", RIGHT, "127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.5").status_code == 429
    assert logged_in(attempt(device, "admin", RIGHT, "127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.5"))


# --- how the throttle behaves ------------------------------------------------------------------------------------

def test_a_refusal_reads_the_same_whether_or_not_the_user_exists(admin):
    answers = []
    for username in ("admin", "nobody-by-this-name"):
        client = Client()
        for _ in range(settings.PODIUM_LOGIN_MAX_FAILURES):
            attempt(client, username, "wrong", "192.0.2.30")
        refused = attempt(client, username, "wrong", "192.0.2.30")
        answers.append((refused.status_code, refused["Retry-After"], form_errors(refused)))
    assert answers[0][0] == 429 and answers[0] == answers[1]


def test_failures_below_the_limit_cost_nothing_and_a_success_clears_them(admin):
    client = Client()
    for _ in range(settings.PODIUM_LOGIN_MAX_FAILURES - 1):
        assert attempt(client, "admin", "wrong", "192.0.2.20").status_code == 200
    assert logged_in(attempt(client, "admin", RIGHT, "192.0.2.20"))
    client.post("/admin/logout/")
    fresh = Client()  # no device cookie: the (user, address) count itself was cleared
    for _ in range(settings.PODIUM_LOGIN_MAX_FAILURES - 1):
        assert attempt(fresh, "admin", "wrong", "192.0.2.20").status_code == 200
    assert logged_in(attempt(fresh, "admin", RIGHT, "192.0.2.20"))


def test_a_refused_attempt_does_not_check_the_password_and_not_waiting_only_waits_longer(admin):
    client = Client()
    for _ in range(settings.PODIUM_LOGIN_MAX_FAILURES):
        attempt(client, "admin", "wrong", "192.0.2.40")
    waits = []
    for _ in range(5):
        refused = attempt(client, "admin", RIGHT, "192.0.2.40")  # the right password, refused unchecked
        assert refused.status_code == 429 and "_auth_user_id" not in client.session
        waits.append(int(refused["Retry-After"]))
    assert waits == sorted(set(waits)) and waits[-1] <= settings.PODIUM_LOGIN_MAX_DELAY_S  # growing each time


def test_each_further_failure_of_a_pair_doubles_its_wait_up_to_the_cap(db, settings):
    settings.PODIUM_LOGIN_MAX_DELAY_S = 60
    pair = [Bucket("podium:login:pair:test-" + secrets.token_hex(4), free_failures=3)]
    now = 1_000_000.0
    waits = []
    for _ in range(12):
        assert retry_after(pair, now) == 0  # the previous wait is over
        record_failure(pair, now)
        waits.append(retry_after(pair, now))
        now += waits[-1]
    assert waits == [0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert retry_after(pair, now - 1) == 1  # one second before the wait ends, it is not over


def test_the_delay_schedule_starts_after_the_free_failures():
    assert [delay_after(n, 5) for n in range(1, 9)] == [0, 0, 0, 0, 1, 2, 4, 8]


def test_a_forged_or_foreign_device_cookie_is_no_device_at_all(admin):
    device = known_device("192.0.2.50")
    guesser = Client()
    for _ in range(settings.PODIUM_LOGIN_MAX_FAILURES):
        attempt(guesser, "admin", "wrong", "192.0.2.50")
    forged = Client()
    forged.cookies[DEVICE_COOKIE] = device.cookies[DEVICE_COOKIE].value[:-2] + "xx"
    assert attempt(forged, "admin", RIGHT, "192.0.2.50").status_code == 429
    # A real cookie names its user: it does not help a guesser at another username.
    get_user_model().objects.create_user("operator", password="operator-password-1", is_staff=True)
    for _ in range(settings.PODIUM_LOGIN_MAX_FAILURES):
        attempt(device, "operator", "wrong", "192.0.2.50")
    assert attempt(device, "operator", "operator-password-1", "192.0.2.50").status_code == 429


def test_a_known_device_that_keeps_failing_is_slowed_down_too(admin):
    device = known_device("192.0.2.60")
    for _ in range(settings.PODIUM_LOGIN_MAX_FAILURES):
        assert attempt(device, "admin", "wrong", "192.0.2.60").status_code == 200
    assert attempt(device, "admin", RIGHT, "192.0.2.60").status_code == 429
    assert logged_in(attempt(Client(), "admin", RIGHT, "192.0.2.61"))  # its failures were the device's alone


def test_a_browser_keeps_a_device_entry_for_each_user_who_logged_in_on_it(admin):
    get_user_model().objects.create_user("operator", password="operator-password-1", is_staff=True)
    browser = Client()
    assert logged_in(attempt(browser, "admin", RIGHT, "192.0.2.70"))
    browser.post("/admin/logout/")
    assert logged_in(attempt(browser, "operator", "operator-password-1", "192.0.2.70"))
    browser.post("/admin/logout/")
    for _ in range(settings.PODIUM_LOGIN_ADDRESS_MAX_FAILURES + 5):
        attempt(Client(), "guess-" + secrets.token_hex(4), "wrong", "192.0.2.70")
    assert logged_in(attempt(browser, "admin", RIGHT, "192.0.2.70"))
    browser.post("/admin/logout/")
    assert logged_in(attempt(browser, "operator", "operator-password-1", "192.0.2.70"))


@pytest.fixture
def redis_cache(settings):
    """The cache on the machine's Redis, as in production (a db number of our own)."""
    from tests.production.stack import RedisDb, require_services

    require_services()
    redis_db = RedisDb()
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": redis_db.url}}
    yield redis_db
    redis_db.release()


@pytest.mark.production
def test_with_redis_as_the_cache_delays_grow_and_known_devices_get_in_the_same_way(admin, redis_cache):
    pair = [Bucket("podium:login:pair:redis-" + secrets.token_hex(4), free_failures=2)]
    waits = []
    now = 2_000_000.0
    for _ in range(5):
        record_failure(pair, now)
        waits.append(retry_after(pair, now))
        now += waits[-1]
    assert waits == [0, 1, 2, 4, 8]
    assert any(key.startswith(b":1:podium:login:pair:redis-") for key in redis_cache.client.keys("*"))

    device = known_device("192.0.2.80")
    for _ in range(settings.PODIUM_LOGIN_MAX_FAILURES + 3):
        attempt(Client(), "admin", "wrong", "192.0.2.80")
    assert attempt(Client(), "admin", RIGHT, "192.0.2.80").status_code == 429
    assert logged_in(attempt(device, "admin", RIGHT, "192.0.2.80"))


# --- the client's address -------------------------------------------------------------------------------------

def request_from(remote: str, forwarded: str | None = None):
    headers = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    return RequestFactory().get("/", REMOTE_ADDR=remote, **headers)


PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]


@pytest.mark.parametrize("remote,forwarded,expected", [
    ("203.0.113.9", "198.51.100.1", "203.0.113.9"),  # the peer is no proxy of ours: the header is anyone's
    ("127.0.0.1", None, "127.0.0.1"),
    ("127.0.0.1", "198.51.100.1", "198.51.100.1"),
    ("127.0.0.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # the client's own claim, left of ours, is ignored
    ("127.0.0.1", "198.51.100.1, 10.1.1.1", "198.51.100.1"),  # through two trusted proxies
    ("127.0.0.1", "10.1.1.1, 10.2.2.2", "10.1.1.1"),  # proxies all the way: the leftmost one we know
    ("127.0.0.1", "not-an-address", "127.0.0.1"),
    ("127.0.0.1", "198.51.100.1:4711", "198.51.100.1"),
    ("127.0.0.1", "[2001:db8::1]:4711", "2001:db8::1"),
    ("127.0.0.1", "2001:db8::1", "2001:db8::1"),
])
def test_x_forwarded_for_counts_only_from_a_trusted_proxy_read_right_to_left(remote, forwarded, expected):
    with override_settings(PODIUM={**settings.PODIUM, "TRUSTED_PROXIES": PROXIES}):
        assert client_address(request_from(remote, forwarded)) == expected


def test_with_no_trusted_proxies_x_forwarded_for_is_ignored():
    assert settings.PODIUM["TRUSTED_PROXIES"] == []
    assert client_address(request_from("127.0.0.1", "198.51.100.1")) == "127.0.0.1"


def test_the_trusted_proxies_setting_reads_networks_from_the_environment(monkeypatch):
    from config.env import env_networks

    monkeypatch.setenv("PODIUM_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")
    assert env_networks("PODIUM_TRUSTED_PROXIES", "none") == PROXIES
