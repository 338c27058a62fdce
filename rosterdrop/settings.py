"""Settings from environment variables, with defaults that run anywhere (SQLite under ./var/)."""

import os
from pathlib import Path

import dj_database_url

DATA_DIR = Path(os.environ.get("ROSTERDROP_DATA_DIR", "var")).resolve()
DATABASE_URL = os.environ.get(
    "ROSTERDROP_DATABASE_URL", f"sqlite:///{DATA_DIR / 'rosterdrop.sqlite3'}"
)

SECRET_KEY = os.environ.get("ROSTERDROP_SECRET_KEY", "")
if not SECRET_KEY:
    # A per-deployment key kept in the data folder, so sessions survive restarts.
    _key_file = DATA_DIR / "secret_key"
    if not _key_file.exists():
        import secrets

        DATA_DIR.mkdir(parents=True, exist_ok=True)
        _key_file.write_text(secrets.token_urlsafe(50))
        _key_file.chmod(0o600)
    SECRET_KEY = _key_file.read_text().strip()

DEBUG = os.environ.get("ROSTERDROP_DEBUG", "") == "1"
ALLOWED_HOSTS = os.environ.get("ROSTERDROP_ALLOWED_HOSTS", "*").split(",")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rosterdrop.districts",
    "rosterdrop.inbox",
    "rosterdrop.roster",
    "rosterdrop.ingest",
    "rosterdrop.audit",
    "rosterdrop.intake",
]

MIDDLEWARE = [
    "rosterdrop.ops.proxies.ForwardedForMiddleware",  # the client's address behind a balancer
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "rosterdrop.accounts.zones.TimeZoneMiddleware",  # times in the person's (or district's) zone
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "rosterdrop.urls"
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
            "builtins": ["rosterdrop.web.templatetags.shown"],
        },
    }
]
WSGI_APPLICATION = "rosterdrop.wsgi.application"

SQLITE_WRITE_WAIT_SECONDS = 600
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web pages read while an import writes. SQLite has one writer, and an import
    # holds its lock from its apply to its commit: a minute or more for a large district. Every
    # other write (a received file, a login's audit row, a console form) waits it out rather
    # than fail, for up to SQLITE_WRITE_WAIT_SECONDS.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": SQLITE_WRITE_WAIT_SECONDS,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests use a file, not :memory:, because the bulk loader opens its own connection.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PASSWORD_HASHERS = ["django.contrib.auth.hashers.Argon2PasswordHasher"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "rosterdrop.ops.logs.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("ROSTERDROP_LOG_LEVEL", "INFO")},
    # The job queue's own lines (each task registered, each job started) only when they warn.
    "loggers": {"procrastinate": {"level": "WARNING"}},
}
# ROSTERDROP_LOG_FORMAT=json: one JSON object a line (time, level, logger, message).
LOG_FORMAT = os.environ.get("ROSTERDROP_LOG_FORMAT", "text")
if LOG_FORMAT not in ("text", "json"):
    raise ValueError(f"ROSTERDROP_LOG_FORMAT is text or json, not {LOG_FORMAT!r}")
if LOG_FORMAT == "json":
    LOGGING["handlers"]["console"]["formatter"] = "json"

# Import limits (zip members are streamed, never extracted to disk).
ZIP_MAX_MEMBERS = int(os.environ.get("ROSTERDROP_ZIP_MAX_MEMBERS", "64"))
ZIP_MAX_TOTAL_BYTES = int(os.environ.get("ROSTERDROP_ZIP_MAX_TOTAL_BYTES", str(8 * 1024**3)))
ZIP_MAX_RATIO = int(os.environ.get("ROSTERDROP_ZIP_MAX_RATIO", "200"))
# Where raw uploads are kept: blank for the data folder, or s3://bucket/prefix for an
# S3-compatible bucket shared by every process (boto3 reads AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION itself).
STORAGE_URL = os.environ.get("ROSTERDROP_STORAGE_URL", "")
if STORAGE_URL and not STORAGE_URL.startswith("s3://"):
    raise ValueError(f"ROSTERDROP_STORAGE_URL is s3://bucket/prefix, not {STORAGE_URL!r}")
# Raw uploads are deleted this many days after they arrive (0 keeps them for ever).
UPLOAD_RETENTION_DAYS = int(os.environ.get("ROSTERDROP_RETENTION_DAYS", "90"))
# Share of any entity's active records a sync may remove before it is held for approval.
REMOVAL_THRESHOLD = float(os.environ.get("ROSTERDROP_REMOVAL_THRESHOLD", "0.10"))
# Bytes of raw uploads a district may keep (the same bytes sent again count once); a district's
# own setting overrides it. An SFTP/FTPS upload that would go past it is refused as it arrives.
DISTRICT_QUOTA_BYTES = int(os.environ.get("ROSTERDROP_DISTRICT_QUOTA_BYTES", str(20 * 1024**3)))


# SFTP intake (rosterdrop serve). Defaults follow OpenSSH and SFTPGo; see docs/reference/stack.md.
def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, str(default)))


SFTP_HOST_KEY = DATA_DIR / "ssh_host_ed25519_key"
# The port `serve` listens on (its --sftp-port sets this too, so the console shows the real one).
SFTP_PORT = _env_int("ROSTERDROP_SFTP_PORT", 2222)
# SFTP worker processes (intake/sftp_workers.py); 1 = connections served in serve's own process.
# 2: on 2 cores, 100 uploads at once 1.5-2.1x one process's rate, a third process adds nothing
# (bench/README.md, "Uploads").
SFTP_PROCESSES = _env_int("ROSTERDROP_SFTP_PROCESSES", 2)
# Login names made by `sftp-user add --person NAME` (FTPS also accepts the dotted form).
SFTP_LOGIN_SCHEME = os.environ.get("ROSTERDROP_LOGIN_SCHEME", "{person}_admin_{district}_{state}")
SFTP_LOGIN_TIMEOUT = _env_float("ROSTERDROP_SFTP_LOGIN_TIMEOUT", 30)
SFTP_KEEPALIVE_INTERVAL = _env_float("ROSTERDROP_SFTP_KEEPALIVE_INTERVAL", 15)
SFTP_KEEPALIVE_COUNT_MAX = _env_int("ROSTERDROP_SFTP_KEEPALIVE_COUNT_MAX", 3)
SFTP_LOGIN_DELAY = _env_float("ROSTERDROP_SFTP_LOGIN_DELAY", 1.0)  # seconds after a failure
SFTP_MAX_AUTH_TRIES = _env_int("ROSTERDROP_SFTP_MAX_AUTH_TRIES", 6)  # per connection
SFTP_MAX_CONNECTIONS_PER_IP = _env_int("ROSTERDROP_SFTP_MAX_CONNECTIONS_PER_IP", 20)
SFTP_MAX_CONNECTIONS = _env_int("ROSTERDROP_SFTP_MAX_CONNECTIONS", 500)
SFTP_MAX_SESSIONS = _env_int("ROSTERDROP_SFTP_MAX_SESSIONS", 4)  # per connection
SFTP_MAX_OPEN_HANDLES = _env_int("ROSTERDROP_SFTP_MAX_OPEN_HANDLES", 16)  # per session
SFTP_MAX_FILE_SIZE = _env_int("ROSTERDROP_SFTP_MAX_FILE_SIZE", 4 * 1024**3)
# An authenticated SFTP connection that sends nothing for this long is closed (0 = never).
SFTP_IDLE_TIMEOUT = _env_float("ROSTERDROP_SFTP_IDLE_TIMEOUT", 300)
# Defender (SFTPGo style): failures add to a per-IP score; at the threshold the IP is banned.
DEFENDER_SCORE_INVALID_USER = _env_int("ROSTERDROP_DEFENDER_SCORE_INVALID_USER", 2)
DEFENDER_SCORE_FAILED = _env_int("ROSTERDROP_DEFENDER_SCORE_FAILED", 1)
DEFENDER_SCORE_LIMIT = _env_int("ROSTERDROP_DEFENDER_SCORE_LIMIT", 3)  # too many per-IP conns
DEFENDER_THRESHOLD = _env_int("ROSTERDROP_DEFENDER_THRESHOLD", 15)
DEFENDER_OBSERVATION_SECONDS = _env_int("ROSTERDROP_DEFENDER_OBSERVATION_SECONDS", 1800)
DEFENDER_BAN_SECONDS = _env_int("ROSTERDROP_DEFENDER_BAN_SECONDS", 1800)
DEFENDER_BAN_INCREASE = _env_float("ROSTERDROP_DEFENDER_BAN_INCREASE", 0.5)  # +50 % per repeat
# Sources never banned (comma-separated IPs or networks), e.g. the district's own NAT.
DEFENDER_SAFELIST = os.environ.get("ROSTERDROP_DEFENDER_SAFELIST", "")
# Load balancers (addresses or CIDRs) in front of the front ends: from these, SFTP and FTPS read
# a PROXY protocol v2 header (and require one), and the web side believes X-Forwarded-For.
TRUSTED_PROXIES = os.environ.get("ROSTERDROP_TRUSTED_PROXIES", "")
# FTPS intake (pyftpdlib), beside SFTP: same logins, folders, login delay, connection caps,
# maximum file size and defender as above. TLS (1.2 or later) is required on control and data.
# Blank certificate file: a self-signed one is made in the data folder on first start and kept;
# an operator's PEM chain may hold its key too (then leave the key file blank).
FTPS_PORT = _env_int("ROSTERDROP_FTPS_PORT", 2121)  # explicit (AUTH TLS); 21 needs root
FTPS_IMPLICIT_PORT = _env_int("ROSTERDROP_FTPS_IMPLICIT_PORT", 9990)  # 990 needs root
FTPS_ENABLED = os.environ.get("ROSTERDROP_FTPS", "1") == "1"
FTPS_CERT_FILE = os.environ.get("ROSTERDROP_FTPS_CERT_FILE", "")
FTPS_KEY_FILE = os.environ.get("ROSTERDROP_FTPS_KEY_FILE", "")
FTPS_PASSIVE_PORTS = os.environ.get("ROSTERDROP_FTPS_PASSIVE_PORTS", "50000-50100")
# The public address given in PASV replies when the server is behind NAT (blank: the bound one).
FTPS_MASQUERADE_ADDRESS = os.environ.get("ROSTERDROP_FTPS_MASQUERADE_ADDRESS", "")
FTPS_MAX_LOGIN_ATTEMPTS = _env_int("ROSTERDROP_FTPS_MAX_LOGIN_ATTEMPTS", 3)  # per connection
FTPS_IDLE_TIMEOUT = _env_float("ROSTERDROP_FTPS_IDLE_TIMEOUT", 300)  # control and data
# The worker sweeps this often (one query) for uploads no wake-up announced (seconds).
WORKER_POLL_SECONDS = _env_float("ROSTERDROP_WORKER_POLL_SECONDS", 2)
# Upload sources the in-process worker imports (the web page and CLI may import directly).
WORKER_SOURCES = os.environ.get("ROSTERDROP_WORKER_SOURCES", "sftp,ftps").split(",")
# On PostgreSQL imports go through procrastinate's job queue (rosterdrop.intake.queue), run by
# `rosterdrop worker` and by plain `serve`; SQLite keeps the worker thread (intake/worker.py).
JOB_QUEUE = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
if JOB_QUEUE:
    INSTALLED_APPS += ["procrastinate.contrib.django"]
    PROCRASTINATE_AUTODISCOVER_MODULE_NAME = ""  # the tasks are in these named modules
    PROCRASTINATE_IMPORT_PATHS = ["rosterdrop.intake.queue", "rosterdrop.ingest.jobs"]
# Imports one worker process runs at once (`rosterdrop worker --concurrency`).
WORKER_CONCURRENCY = _env_int("ROSTERDROP_WORKER_CONCURRENCY", 2)
# On SIGTERM, how long serve waits for uploads in flight and a worker for its import, before
# it closes the connections (the client sees a failure, nothing is kept) and hands the job back.
SHUTDOWN_SECONDS = _env_float("ROSTERDROP_SHUTDOWN_SECONDS", 30)


# Web console, JSON API and mail (rosterdrop.web, .api, .accounts, .notify).
INSTALLED_APPS += ["axes", "ninja", "rosterdrop.accounts", "rosterdrop.notify", "rosterdrop.web"]
INSTALLED_APPS += ["django.contrib.humanize"]  # thousands separators in the console
INSTALLED_APPS += ["rosterdrop.backup"]  # `rosterdrop backup` and `restore`; no models
MIDDLEWARE.insert(2, "whitenoise.middleware.WhiteNoiseMiddleware")  # static files, no collectstatic
MIDDLEWARE.append("axes.middleware.AxesMiddleware")  # login throttling
WHITENOISE_USE_FINDERS = True
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
AXES_FAILURE_LIMIT = int(os.environ.get("ROSTERDROP_LOGIN_FAILURE_LIMIT", 5))
AXES_COOLOFF_TIME = float(os.environ.get("ROSTERDROP_LOGIN_COOLOFF_HOURS", 0.25))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # no banner on every command
AXES_LOCKOUT_TEMPLATE = "web/locked_out.html"
# Secure cookies by default; ROSTERDROP_SECURE_COOKIES=0 for plain-http use on localhost.
SESSION_COOKIE_SECURE = os.environ.get("ROSTERDROP_SECURE_COOKIES", "1") == "1"
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = 8 * 3600
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("ROSTERDROP_CSRF_ORIGINS", "").split(",") if o]
BASE_URL = os.environ.get("ROSTERDROP_BASE_URL", "http://127.0.0.1:8000")  # links in mails
SFTP_PUBLIC_HOST = os.environ.get("ROSTERDROP_SFTP_PUBLIC_HOST", "")  # shown; blank = web host
# Shown to districts when a NAT or load balancer exposes SFTP elsewhere; 0 = SFTP_PORT.
SFTP_PUBLIC_PORT = int(os.environ.get("ROSTERDROP_SFTP_PUBLIC_PORT") or 0)
WEB_MAX_UPLOAD_BYTES = int(os.environ.get("ROSTERDROP_WEB_MAX_UPLOAD_BYTES", 2 * 1024**3))
WEB_IMPORT_IN_BACKGROUND = os.environ.get("ROSTERDROP_WEB_IMPORT_IN_BACKGROUND", "1") == "1"
NINJA_PAGINATION_PER_PAGE = 100
NINJA_PAGINATION_MAX_LIMIT = 1000
NINJA_PAGINATION_CLASS = "rosterdrop.paging.Paging"  # offset bounded too: 422, not 500
EMAIL_HOST = os.environ.get("ROSTERDROP_SMTP_HOST", "")  # blank = no notification mails
EMAIL_PORT = int(os.environ.get("ROSTERDROP_SMTP_PORT", 587))
EMAIL_HOST_USER = os.environ.get("ROSTERDROP_SMTP_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("ROSTERDROP_SMTP_PASSWORD", "")
EMAIL_USE_TLS = os.environ.get("ROSTERDROP_SMTP_TLS", "starttls") == "starttls"
EMAIL_USE_SSL = os.environ.get("ROSTERDROP_SMTP_TLS", "starttls") == "ssl"
EMAIL_TIMEOUT = int(os.environ.get("ROSTERDROP_SMTP_TIMEOUT", 10))
DEFAULT_FROM_EMAIL = os.environ.get("ROSTERDROP_MAIL_FROM", "rosterdrop@localhost")

# Custom import templates (rosterdrop.custom): a district's own file layouts.
INSTALLED_APPS += ["rosterdrop.custom"]

# The OneRoster 1.2 service (rosterdrop.oneroster): REST reads by OAuth 2.0 clients.
INSTALLED_APPS += ["rosterdrop.oneroster"]
ONEROSTER_TOKEN_SECONDS = int(os.environ.get("ROSTERDROP_ONEROSTER_TOKEN_SECONDS", 3600))
ONEROSTER_PAGE_SIZE = 100  # the binding's default limit
ONEROSTER_MAX_PAGE_SIZE = int(os.environ.get("ROSTERDROP_ONEROSTER_MAX_PAGE_SIZE", 10_000))
# Requests a minute per client before 429 (0 = no limit).
ONEROSTER_RATE_LIMIT = int(os.environ.get("ROSTERDROP_ONEROSTER_RATE_LIMIT", 600))

# The change feed (rosterdrop.feed): events of every applied sync, kept this many days.
INSTALLED_APPS += ["rosterdrop.feed"]
FEED_RETENTION_DAYS = int(os.environ.get("ROSTERDROP_FEED_RETENTION_DAYS", 30))
# A webhook sender claims a delivery for this long (a killed sender's claim runs out).
WEBHOOK_CLAIM_SECONDS = int(os.environ.get("ROSTERDROP_WEBHOOK_CLAIM_SECONDS", 120))

# Health, readiness and Prometheus metrics (rosterdrop.ops; README "Health and metrics"):
# who may read /metrics, as addresses or networks (/healthz and /readyz are open).
METRICS_ALLOW = [
    a.strip()
    for a in os.environ.get("ROSTERDROP_METRICS_ALLOW", "127.0.0.1,::1").split(",")
    if a.strip()
]
