"""Podium settings, read from the environment.

No variables set -> the embedded mode: SQLite file, in-memory channel layer,
in-process runner, local-memory cache. DATABASE_URL -> PostgreSQL.
REDIS_URL -> channels-redis, Redis cache and the Celery broker.
"""
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_float, env_int, env_list, env_networks, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PODIUM_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if env_bool("PODIUM_PRODUCTION", False):
        raise ImproperlyConfigured("SECRET_KEY must be set when PODIUM_PRODUCTION is true")
    SECRET_KEY = "embedded-insecure-key-change-me-in-production-" + "x" * 20
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our own static files: no CDN, works offline
    "csp",
    "channels",
    "orchestration",
    "observability",
    "api",
    "dashboard",
    "terminal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "api.url_limits.reject_nul_in_url",  # %00 would be a 500 on PostgreSQL
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "orchestration.access.login_throttle.LoginThrottleMiddleware",
    "orchestration.config_audit.ConfigActorMiddleware",  # who made a configuration change (the audit trail)
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -------------------------------------------------------------
DATABASE_URL = env_url("DATABASE_URL", {"postgres", "postgresql", "sqlite"})
if DATABASE_URL:
    try:
        DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
    except Exception:
        raise ImproperlyConfigured("DATABASE_URL could not be parsed") from None
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "podium.sqlite3",
            # WAL + a busy timeout let the batched writer and the web process share the file.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE",
                        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
            "TEST": {"NAME": str(BASE_DIR / f".test-{env_str('PYTEST_XDIST_WORKER', 'main')}.sqlite3")},
        }
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A connection pool per process, not a persistent connection per thread: ASGI runs each request's sync
    # code in a thread of its own, and per-thread connections would pile up to PostgreSQL's max_connections.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1, "max_size": env_int("PODIUM_DB_POOL_SIZE", 10), "timeout": 10}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- redis: channel layer, cache, celery -----------------------------------
REDIS_URL = env_url("REDIS_URL", {"redis", "rediss", "unix"})
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "capacity": 1000, "expiry": 30},
        }
    }
    # Short socket timeouts: a Redis blip must degrade the hot path (stale registry, local limits), not hang it.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1}}}
    CELERY_BROKER_URL = REDIS_URL
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CELERY_BROKER_URL = "memory://"
# Embedded mode runs async work in-process; production hands it to Celery workers.
PODIUM_RUNNER = env_str("PODIUM_RUNNER", "celery" if REDIS_URL else "inprocess")
if PODIUM_RUNNER not in {"celery", "inprocess"}:
    raise ImproperlyConfigured("PODIUM_RUNNER must be 'celery' or 'inprocess'")
# What executes runs, as a dotted path (orchestration/runs/dispatch.py loads it the way Django loads backends).
PODIUM_RUNNER_BACKEND = {"celery": "orchestration.runner.celery.runner",
                         "inprocess": "orchestration.runner.inprocess.runner"}[PODIUM_RUNNER]

# Review queue: a claim lapses after this long without a decision; items fall due after PODIUM_REVIEW_DUE_S
# unless the gate says otherwise. The scheduler (embedded mode; Celery beat in production) runs expiry,
# claim lapse every PODIUM_SCHEDULER_INTERVAL_S and the model-statistics recompute every PODIUM_LEARNING_INTERVAL_S.
PODIUM_REVIEW_CLAIM_TTL_S = env_int("PODIUM_REVIEW_CLAIM_TTL_S", 900)
PODIUM_REVIEW_DUE_S = env_int("PODIUM_REVIEW_DUE_S", 24 * 3600)
PODIUM_SCHEDULER_INTERVAL_S = env_float("PODIUM_SCHEDULER_INTERVAL_S", 10.0)
# Under Celery a run's Redis lease lives this long and is renewed every third of it while the run executes:
# a dead worker's runs can be taken over this long after it died (orchestration/runs/leases.py).
PODIUM_RUN_LEASE_S = env_float("PODIUM_RUN_LEASE_S", 30.0)
PODIUM_LEARNING_INTERVAL_S = env_float("PODIUM_LEARNING_INTERVAL_S", 60.0)
# Confidence calibration (orchestration/calibration): refit every PODIUM_CALIBRATION_INTERVAL_S from review
# labels; a model (or a workflow step) needs PODIUM_CALIBRATION_MIN_LABELS before its map is used.
PODIUM_CALIBRATION_INTERVAL_S = env_float("PODIUM_CALIBRATION_INTERVAL_S", 300.0)
PODIUM_CALIBRATION_MIN_LABELS = env_int("PODIUM_CALIBRATION_MIN_LABELS", 50)
PODIUM_CALIBRATION_MAX_LABELS = env_int("PODIUM_CALIBRATION_MAX_LABELS", 5000)

CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("PODIUM_VISIBILITY_TIMEOUT", 3600)}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_BACKEND = None

# --- auth, sessions ----------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
SESSION_COOKIE_HTTPONLY = True
# Production (PODIUM_PRODUCTION=true) defaults to HTTPS-only cookies, redirects and HSTS; each can be overridden.
PRODUCTION = env_bool("PODIUM_PRODUCTION", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]  # probes and scrapers speak plain HTTP
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", PRODUCTION)
if env_bool("PODIUM_BEHIND_TLS_PROXY", False):  # the proxy terminates TLS and sets X-Forwarded-Proto
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Sent as a header on every page Django serves (control room, admin, API docs). Model output is shown as
# text; this is the second lock: no inline or foreign script ever runs. Inline styles stay allowed for the
# admin's widgets and Swagger UI; 'self' in connect-src covers the control room's websocket.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
# Failed logins (admin and site) slow down per (username, address), per address and per known device;
# see orchestration/access/login_throttle.py.
AUTHENTICATION_BACKENDS = ["orchestration.access.login_throttle.LoginThrottleBackend",
                           "django.contrib.auth.backends.ModelBackend"]
PODIUM_LOGIN_MAX_FAILURES = env_int("PODIUM_LOGIN_MAX_FAILURES", 5)
PODIUM_LOGIN_ADDRESS_MAX_FAILURES = env_int("PODIUM_LOGIN_ADDRESS_MAX_FAILURES", 50)
PODIUM_LOGIN_MAX_DELAY_S = env_int("PODIUM_LOGIN_MAX_DELAY_S", 900)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns when it is missing
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.APIKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Bounded JSON (size, depth, UTF-8, NUL) and forms without NUL, answered with clear 4xx: api/input.py.
    "DEFAULT_PARSER_CLASSES": ["api.input.StrictJSONParser", "api.input.StrictFormParser",
                               "api.input.StrictMultiPartParser"],
    "EXCEPTION_HANDLER": "api.input.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["api.throttling.KeyLimitsThrottle"],  # per-key limits, orchestration/access/limits.py
    "DEFAULT_PAGINATION_CLASS": "api.pagination.BoundedLimitOffsetPagination",  # limit <= 200
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Podium API",
    "DESCRIPTION": "Multi-LLM orchestration gateway: runs, workflows, registry, reviews.",
    "VERSION": "0.1.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No badge fetched from validator.swagger.io: the docs page talks to this server only.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    # Several models have a `kind` and a `status`: name each choice set instead of a hashed suffix.
    "ENUM_NAME_OVERRIDES": {
        "RunKindEnum": "orchestration.models.runs.Run.Kind",
        "ProviderKindEnum": "orchestration.models.registry.Provider.Kind",
        "RunStatusEnum": "orchestration.models.runs.RunStatus",
        "StepStatusEnum": "orchestration.models.runs.StepStatus",
        "ReviewStatusEnum": "orchestration.models.reviews.ReviewItem.Status",
    },
}

# --- Podium --------------------------------------------------------------------
PODIUM = {
    # how long the batched writer may hold records before flushing (seconds)
    "WRITER_FLUSH_INTERVAL": env_float("PODIUM_WRITER_FLUSH_INTERVAL", 0.25),
    "WRITER_BACKLOG_LIMIT": env_int("PODIUM_WRITER_BACKLOG_LIMIT", 10_000),  # more runs waiting: /readyz 503
    # how long a cached registry/API-key snapshot may be served before re-checking the version
    "REGISTRY_CHECK_INTERVAL": env_float("PODIUM_REGISTRY_CHECK_INTERVAL", 1.0),
    "MAX_BODY_BYTES": env_int("PODIUM_MAX_BODY_BYTES", 4 * 1024 * 1024),
    # required for /metrics when PODIUM_PRODUCTION is set (docs/operations.md, "The metrics token")
    "METRICS_TOKEN": env_str("PODIUM_METRICS_TOKEN", ""),
    # reverse proxies whose X-Forwarded-For names the client (orchestration/access/client_address.py)
    "TRUSTED_PROXIES": env_networks("PODIUM_TRUSTED_PROXIES", "none"),
    # where people reach this Podium: links printed by command-line tools (e.g. a run's review page)
    "PUBLIC_URL": env_str("PODIUM_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/"),
    # resilience (docs/resilience.md): retries of one model, and the per-model circuit breaker
    "RETRY_MAX": env_int("PODIUM_RETRY_MAX", 2),
    "RETRY_BASE_DELAY_S": env_float("PODIUM_RETRY_BASE_DELAY_S", 0.25),
    "CIRCUIT_FAILURES": env_int("PODIUM_CIRCUIT_FAILURES", 5),
    "CIRCUIT_COOLDOWN_S": env_float("PODIUM_CIRCUIT_COOLDOWN_S", 30.0),
    # /metrics without the token: only from these networks ("none" = token only)
    "METRICS_ALLOWED_NETWORKS": env_networks("PODIUM_METRICS_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128"),
    # data classes that go only to models on local providers, unless a model lists the class itself
    # (orchestration/engine/policy.py; docs/configuration.md, "Data classes")
    "LOCAL_ONLY_DATA_CLASSES": env_list("PODIUM_LOCAL_ONLY_DATA_CLASSES", ["sensitive", "restricted"]),
    # seconds a budget hold lives unsettled: a killed process's holds are released after it (docs/budgets.md)
    "BUDGET_RESERVATION_TTL_S": env_float("PODIUM_BUDGET_RESERVATION_TTL_S", 600.0),
}

DATA_UPLOAD_MAX_MEMORY_SIZE = PODIUM["MAX_BODY_BYTES"]  # one body limit for /v1, /api and forms

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
    "loggers": {"django.channels.server": {"level": "WARNING"}, "daphne": {"level": "WARNING"},
                "httpx": {"level": "WARNING"}},
}
