"""Read and validate every environment variable the hub uses, in one place.

Functions call `get_settings()` at import time, so a bad value stops the
process at start-up with a message that names the variable, the value and
the fix, instead of failing on the first request.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

SCHEMA_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# A Kubernetes namespace name is a DNS-1123 label.
DNS_LABEL_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
RUNTIMES = ("local", "kubernetes")


class SettingsError(RuntimeError):
    """One or more environment variables are missing or invalid."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    db_schema: str
    secret_key: str
    max_inputs: int
    max_input_length: int
    access_token_ttl_seconds: int
    user_session_ttl_seconds: int
    anonymous_session_ttl_seconds: int
    refresh_grace_seconds: int
    job_token_ttl_seconds: int
    password_time_cost: int
    password_memory_kib: int
    password_parallelism: int
    login_max_failures_per_account_address: int
    login_max_failures_per_account: int
    login_max_failures_per_address: int
    login_failure_window_seconds: int
    trusted_proxy_hops: int
    event_sink: str | None
    event_source: str
    runtime: str
    local_runtime_url: str | None
    k8s_namespace: str
    agent_image: str
    jobs_url: str | None
    log_format: str
    image_pull_grace_seconds: int
    unschedulable_timeout_seconds: int
    retention_days: int
    cleanup_batch_size: int
    cleanup_lock_timeout_ms: int
    cleanup_statement_timeout_ms: int
    max_attempts: int
    reconcile_grace_seconds: int


def _database_url(env: dict[str, str], errors: list[str]) -> str:
    raw = env.get("DATABASE_URL", "").strip()
    if not raw:
        errors.append(
            "DATABASE_URL is missing: set it to a PostgreSQL URL such as "
            "postgresql://user:password@127.0.0.1:5432/modelhub"
        )
        return ""

    scheme = urlsplit(raw).scheme
    if scheme in ("postgresql", "postgres"):
        return "postgresql+pg8000" + raw[len(scheme) :]
    if scheme == "postgresql+pg8000":
        return raw

    errors.append(
        f"DATABASE_URL has the scheme {scheme!r}: use postgresql:// or "
        "postgresql+pg8000:// (the hub talks to PostgreSQL through pg8000)"
    )
    return ""


def _positive_int(
    env: dict[str, str], name: str, default: int, errors: list[str]
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        errors.append(f"{name}={raw!r} is invalid: set a whole number of 1 or more")
        return default
    return value


def _whole_number(
    env: dict[str, str], name: str, default: int, errors: list[str]
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        errors.append(f"{name}={raw!r} is invalid: set a whole number of 0 or more")
        return default
    return int(raw)


def _choice(
    env: dict[str, str], name: str, choices: tuple[str, ...], default: str, errors
) -> str:
    value = env.get(name, "").strip() or default
    if value not in choices:
        errors.append(f"{name}={value!r} is invalid: use one of {', '.join(choices)}")
    return value


def _dns_label(env: dict[str, str], name: str, default: str, errors: list[str]) -> str:
    value = env.get(name, "").strip() or default
    if not DNS_LABEL_PATTERN.match(value):
        errors.append(
            f"{name}={value!r} is invalid: use a DNS-1123 label (at most 63 "
            "lower-case letters, digits and '-', starting and ending with a "
            "letter or digit)"
        )
    return value


def _image(env: dict[str, str], name: str, default: str, errors: list[str]) -> str:
    value = env.get(name, "").strip() or default
    if any(character.isspace() for character in value):
        errors.append(
            f"{name}={value!r} is invalid: set a container image reference "
            "without spaces, such as registry.example.com/agent:1.0"
        )
    return value


def _url(env: dict[str, str], name: str, errors: list[str]) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        errors.append(f"{name}={raw!r} is invalid: set an http:// or https:// URL")
        return None
    return raw.rstrip("/")


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build settings from `env` (default: the process environment).

    Raises SettingsError listing every invalid variable at once.
    """
    env = dict(os.environ if env is None else env)
    errors: list[str] = []

    database_url = _database_url(env, errors)

    db_schema = env.get("DB_SCHEMA", "").strip() or "modelhub"
    if not SCHEMA_PATTERN.match(db_schema):
        errors.append(
            f"DB_SCHEMA={db_schema!r} is invalid: use a lower-case identifier "
            "(letters, digits, underscores, not starting with a digit, "
            "at most 63 characters)"
        )

    secret_key = env.get("HUB_SECRET_KEY", "")
    if len(secret_key) < 32:
        errors.append(
            "HUB_SECRET_KEY is missing or shorter than 32 characters: set it to "
            "a random value, e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
        )

    settings = Settings(
        database_url=database_url,
        db_schema=db_schema,
        secret_key=secret_key,
        max_inputs=_positive_int(env, "MAX_INPUTS", 1000, errors),
        max_input_length=_positive_int(env, "MAX_INPUT_LENGTH", 2000, errors),
        access_token_ttl_seconds=_positive_int(
            env, "ACCESS_TOKEN_TTL_SECONDS", 300, errors
        ),
        user_session_ttl_seconds=_positive_int(
            env, "USER_SESSION_TTL_SECONDS", 30 * 86400, errors
        ),
        anonymous_session_ttl_seconds=_positive_int(
            env, "ANONYMOUS_SESSION_TTL_SECONDS", 2 * 86400, errors
        ),
        refresh_grace_seconds=_whole_number(env, "REFRESH_GRACE_SECONDS", 10, errors),
        job_token_ttl_seconds=_positive_int(
            env, "JOB_TOKEN_TTL_SECONDS", 6 * 3600, errors
        ),
        password_time_cost=_positive_int(env, "PASSWORD_TIME_COST", 3, errors),
        password_memory_kib=_positive_int(
            env, "PASSWORD_MEMORY_KIB", 64 * 1024, errors
        ),
        password_parallelism=_positive_int(env, "PASSWORD_PARALLELISM", 1, errors),
        login_max_failures_per_account_address=_positive_int(
            env, "LOGIN_MAX_FAILURES_PER_ACCOUNT_ADDRESS", 5, errors
        ),
        login_max_failures_per_account=_positive_int(
            env, "LOGIN_MAX_FAILURES_PER_ACCOUNT", 50, errors
        ),
        login_max_failures_per_address=_positive_int(
            env, "LOGIN_MAX_FAILURES_PER_ADDRESS", 30, errors
        ),
        login_failure_window_seconds=_positive_int(
            env, "LOGIN_FAILURE_WINDOW_SECONDS", 900, errors
        ),
        trusted_proxy_hops=_whole_number(env, "TRUSTED_PROXY_HOPS", 0, errors),
        event_sink=_url(env, "K_SINK", errors),
        event_source=env.get("EVENT_SOURCE", "").strip() or "/modelhub",
        runtime=_choice(env, "RUNTIME", RUNTIMES, "local", errors),
        local_runtime_url=_url(env, "LOCAL_RUNTIME_URL", errors),
        k8s_namespace=_dns_label(env, "K8S_NAMESPACE", "models", errors),
        agent_image=_image(env, "AGENT_IMAGE", "modelhub/agent:latest", errors),
        jobs_url=_url(env, "JOBS_URL", errors),
        log_format=_choice(env, "LOG_FORMAT", ("json", "text"), "json", errors),
        image_pull_grace_seconds=_positive_int(
            env, "IMAGE_PULL_GRACE_SECONDS", 120, errors
        ),
        unschedulable_timeout_seconds=_positive_int(
            env, "UNSCHEDULABLE_TIMEOUT_SECONDS", 900, errors
        ),
        retention_days=_positive_int(env, "RETENTION_DAYS", 7, errors),
        cleanup_batch_size=_positive_int(env, "CLEANUP_BATCH_SIZE", 1000, errors),
        cleanup_lock_timeout_ms=_positive_int(
            env, "CLEANUP_LOCK_TIMEOUT_MS", 2000, errors
        ),
        cleanup_statement_timeout_ms=_positive_int(
            env, "CLEANUP_STATEMENT_TIMEOUT_MS", 30000, errors
        ),
        max_attempts=_positive_int(env, "MAX_ATTEMPTS", 3, errors),
        reconcile_grace_seconds=_positive_int(
            env, "RECONCILE_GRACE_SECONDS", 120, errors
        ),
    )
    if errors:
        raise SettingsError("invalid configuration:\n  - " + "\n  - ".join(errors))
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, validated once."""
    return load_settings()
