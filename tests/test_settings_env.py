"""Settings come from the environment; a malformed value stops start-up with one line naming it."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def manage(*args, **env):
    full_env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    full_env.update(env)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("name, value", [
    ("DATABASE_URL", "mysql-ish:/nowhere"),
    ("REDIS_URL", "http://127.0.0.1:6379"),
    ("DEBUG", "perhaps"),
    ("PODIUM_WRITER_FLUSH_INTERVAL", "soon"),
])
def test_a_malformed_variable_stops_startup_with_one_line_naming_it(name, value):
    result = manage("check", **{name: value})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], result.stderr


def test_no_variables_means_the_embedded_mode():
    result = manage("shell", "-c", "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'], "
                    "s.CHANNEL_LAYERS['default']['BACKEND'], s.CACHES['default']['BACKEND'], s.PODIUM_RUNNER)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-4:] == ["django.db.backends.sqlite3", "channels.layers.InMemoryChannelLayer",
                                          "django.core.cache.backends.locmem.LocMemCache", "inprocess"]


def test_database_and_redis_urls_switch_to_production_backends():
    result = manage("shell", "-c", "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'], "
                    "s.CHANNEL_LAYERS['default']['BACKEND'], s.CACHES['default']['BACKEND'], s.PODIUM_RUNNER)",
                    DATABASE_URL="postgres://u@127.0.0.1:5432/test", REDIS_URL="redis://127.0.0.1:6379/0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-4:] == ["django.db.backends.postgresql", "channels_redis.core.RedisChannelLayer",
                                          "django.core.cache.backends.redis.RedisCache", "celery"]


def test_log_level_is_read_in_any_case():
    """gunicorn takes `LOG_LEVEL=warning`; the same variable must not stop Django's logging setup."""
    result = manage("shell", "-c", "import logging; print(logging.getLevelName(logging.getLogger().level))",
                    LOG_LEVEL="warning")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "WARNING"
