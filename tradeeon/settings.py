"""Tradeeon settings: one module, read from the environment.

Every default runs with no server at all: SQLite under var/, Celery on kombu's
filesystem transport, a file-based cache. Production sets DATABASE_URL,
CELERY_BROKER_URL, REDIS_URL and SECRET_KEY with TRADEEON_ENV=production.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from celery.schedules import crontab, schedule
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("TRADEEON_VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None


def env_days(name: str, default: int) -> int:
    days = env_int(name, default)
    if days < 1:
        raise ImproperlyConfigured(f"{name} must be a number of days, at least 1, got {days}")
    return days


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def database_from_url(url: str) -> dict:
    """sqlite:///relative/or//absolute/path, or postgres://user:pass@host:port/name."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path if Path(path).is_absolute() else str(BASE_DIR / path),
            # Workers and the web process share the file: wait for locks
            # instead of failing with "database is locked".
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    if parts.scheme in ("postgres", "postgresql", "pgsql"):
        options = dict(parse_qsl(parts.query))
        # psycopg prepares a statement once a connection has run it this many
        # times (evaluation runs the same few per pair, every bar). Django
        # turns that off for poolers that cannot keep prepared statements:
        # behind one (PgBouncer before 1.21 in transaction mode), pass
        # ?prepare_threshold=none.
        threshold = options.pop("prepare_threshold", "5")
        if threshold.lower() in ("", "none"):
            options["prepare_threshold"] = None
        elif threshold.isdigit():
            options["prepare_threshold"] = int(threshold)
        else:
            raise ImproperlyConfigured(
                f"DATABASE_URL: prepare_threshold must be a number or none, not {threshold!r}"
            )
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": env_int("DB_CONN_MAX_AGE", 60),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
        }
    raise ImproperlyConfigured(f"DATABASE_URL: unsupported scheme {parts.scheme!r}")


TRADEEON_ENV = env_str("TRADEEON_ENV", "development")
PRODUCTION = TRADEEON_ENV == "production"
DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set: production (TRADEEON_ENV=production) needs a long random "
            "SECRET_KEY in the environment"
        )
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"

# Exchange API keys are encrypted with this key (Fernet, derived if not given).
FIELD_ENCRYPTION_KEY = env_str("FIELD_ENCRYPTION_KEY")

ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS", "" if PRODUCTION else "localhost,127.0.0.1,[::1],testserver"
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "conditions",
    "alerts",
    "bots",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tradeeon.urls"
WSGI_APPLICATION = "tradeeon.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'tradeeon.sqlite3'}")
DATABASES = {"default": database_from_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis is the cache and event bus in production; with no REDIS_URL the cache
# is file based (shared by processes on one machine) and events are logged.
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "tradeeon.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "tradeeon"),
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

if PRODUCTION:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("API_MAX_BODY_BYTES", 256 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # JSON only: conditions and settings are nested objects that form
    # encodings cannot carry.
    "DEFAULT_PARSER_CLASSES": ["tradeeon.throttling.BoundedJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "tradeeon.throttling.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 50,
    # Read by BoundedLimitOffsetPagination: ?limit= above it is capped.
    "PAGE_SIZE_MAX": env_int("API_PAGE_SIZE_MAX", 200),
    "EXCEPTION_HANDLER": "tradeeon.api_errors.api_exception_handler",
    # Counted in the default cache (Redis in production), shared by every web
    # process: per user everywhere, per user and scope where a view names one
    # (per address for the token endpoint).
    "DEFAULT_THROTTLE_CLASSES": [
        "tradeeon.throttling.UserRateThrottle",
        "tradeeon.throttling.ScopedRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env_str("API_RATE_USER", "1200/min"),
        "auth": env_str("API_RATE_AUTH", "20/min"),
        "register": env_str("API_RATE_REGISTER", "120/min"),
        "subscribe": env_str("API_RATE_SUBSCRIBE", "120/min"),
        "preview": env_str("API_RATE_PREVIEW", "20/min"),
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Tradeeon API",
    "DESCRIPTION": (
        "Alerts, the shared condition registry, DCA bots, deals and orders. "
        "Authenticate with `Authorization: Token <key>` (POST /api/auth/token/). "
        'Every error answers {"errors": [{"field", "message", "code"}]}.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "AlertStatusEnum": "alerts.models.AlertStatus",
        "FireModeEnum": "alerts.models.FireMode",
        "BotKindEnum": "bots.models.BotKind",
        "BotStatusEnum": "bots.models.BotStatus",
        "DealStateEnum": "bots.models.DealState",
        "OrderStatusEnum": "bots.models.OrderStatus",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "tradeeon.api_errors.document_error_responses",
    ],
}

# --- Tradeeon ---------------------------------------------------------------
BINANCE_API_URL = env_str("BINANCE_API_URL", "https://api.binance.com/api")
BINANCE_TESTNET_API_URL = env_str("BINANCE_TESTNET_API_URL", "https://testnet.binance.vision/api")
BINANCE_TIMEOUT_S = float(env_str("BINANCE_TIMEOUT_S", "10"))
# Binance refuses an order request that reaches it later than this after it
# was signed. So once it has passed, an order whose answer was lost and that a
# lookup cannot find will never exist, and may be placed again.
BINANCE_RECV_WINDOW_MS = env_int("BINANCE_RECV_WINDOW_MS", 5000)
KLINE_CACHE_PREFIX = env_str("KLINE_CACHE_PREFIX", "marketdata:klines")
ALERT_RUNNER_POLL_MS = env_int("ALERT_RUNNER_POLL_MS", 1000)
ALERT_MAX_ALERTS_PER_SYMBOL = env_int("ALERT_MAX_ALERTS_PER_SYMBOL", 200)
# Hosts a webhook may target even though they resolve to loopback/private
# addresses (tests and the demo allow 127.0.0.1).
WEBHOOK_ALLOWED_PRIVATE_HOSTS = env_list("WEBHOOK_ALLOWED_PRIVATE_HOSTS")
WEBHOOK_TIMEOUT_S = float(env_str("WEBHOOK_TIMEOUT_S", "5"))
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 5)
WEBHOOK_RETRY_BASE_S = float(env_str("WEBHOOK_RETRY_BASE_S", "5"))
# A queued evaluation not started within this long is dropped and the beat
# tick queues its pair again (its worker died, or the queue lagged that far).
EVALUATION_EXPIRES_S = env_int("EVALUATION_EXPIRES_S", 30)
# Outbox work sent but not done after this long is presumed lost with its
# worker (or the broker) and sent again by the sweeper.
OUTBOX_SWEEP_AFTER_S = float(env_str("OUTBOX_SWEEP_AFTER_S", "30"))
# Retention (alerts/retention.py, hourly): the evaluation cache's bars, by
# market time, plus the longest window a bot's entry reads on their symbol;
# done outbox messages, by wall time (at least the webhook sweep's 6 hours).
EVALUATION_CACHE_RETENTION_DAYS = env_days("EVALUATION_CACHE_RETENTION_DAYS", 30)
OUTBOX_RETENTION_DAYS = env_days("OUTBOX_RETENTION_DAYS", 7)
# A new or submitted order younger than this is left to its own place_order task by reconciliation.
ORDER_SETTLE_S = float(env_str("ORDER_SETTLE_S", "30"))

# --- Celery -----------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    # kombu's filesystem transport, but publishing each message atomically
    # (see tradeeon/broker.py); the URL scheme is used only when this is unset.
    CELERY_BROKER_TRANSPORT = "tradeeon.broker:Transport"
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # The default 1 s poll would add a second to every hop of a chain.
        "polling_interval": 0.1,
    }
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
    if env_str("CELERY_REDIS_KEY_PREFIX"):
        # Lets several deployments (or test runs) share one Redis server.
        CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = env_str("CELERY_REDIS_KEY_PREFIX")

CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 120)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 100)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ROUTES = {
    "alerts.tasks.evaluate_symbol": {"queue": "evaluate"},
}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "tick": {"task": "alerts.tasks.tick", "schedule": schedule(1.0), "options": {"expires": 5}},
    "reconcile-orders": {
        "task": "bots.tasks.reconcile_orders",
        "schedule": schedule(float(env_str("RECONCILE_INTERVAL_S", "10"))),
        "options": {"expires": 60},
    },
    "sweep-outbox": {
        "task": "alerts.tasks.sweep_outbox",
        "schedule": schedule(15.0),
        "options": {"expires": 30},
    },
    "prune": {
        "task": "alerts.tasks.prune",
        "schedule": crontab(minute=17),
        "options": {"expires": 1800},
    },
}

VAR_DIR.mkdir(parents=True, exist_ok=True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
