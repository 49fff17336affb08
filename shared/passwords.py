"""Password policy and hashing.

Hashes use argon2id (argon2-cffi) with time cost 3, 64 MiB of memory and
one lane by default, one of the two parameter sets RFC 9106 recommends.
About 0.25 s per hash on a 2.8 GHz Xeon core. The parameters are settings,
and a login whose stored hash used other parameters stores a new hash.

The policy follows NIST SP 800-63B: a minimum length, a list of common and
guessable passwords, and no composition rules.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from shared.settings import get_settings

MIN_LENGTH = 12
MAX_LENGTH = 256
COMMON_PASSWORDS_FILE = (
    Path(__file__).resolve().parent / "data" / "common_passwords.txt"
)

# Verifying against this hash makes a login for an unknown user cost the
# same time as one for a known user, so timing does not reveal usernames.
_DUMMY_PASSWORD = "dummy password for unknown users"  # noqa: S105 - not a secret


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(
        line.strip().lower()
        for line in lines
        if line.strip() and not line.startswith("#")
    )


@lru_cache(maxsize=1)
def hasher() -> PasswordHasher:
    settings = get_settings()
    return PasswordHasher(
        time_cost=settings.password_time_cost,
        memory_cost=settings.password_memory_kib,
        parallelism=settings.password_parallelism,
    )


def policy_problem(password: object, username: str, email: str) -> str | None:
    """Return why `password` is not acceptable, or None."""
    if not isinstance(password, str):
        return "password must be a string"
    if len(password) < MIN_LENGTH:
        return f"password must have at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"password must have at most {MAX_LENGTH} characters"

    lowered = password.lower()
    if lowered.strip() in common_passwords():
        return "password is on the list of common passwords; choose another"
    if len(set(password)) <= 2:
        return "password repeats one or two characters; choose another"
    if username and username.lower() in lowered:
        return "password must not contain the username"
    local_part = email.split("@", 1)[0].lower() if email else ""
    if len(local_part) >= 4 and local_part in lowered:
        return "password must not contain the email address"
    return None


def hash_password(password: str) -> str:
    return hasher().hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """Check `password` against a stored argon2 hash."""
    try:
        return hasher().verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True when the hash was made with other parameters than the settings."""
    try:
        return hasher().check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hasher().hash(_DUMMY_PASSWORD)


def burn_verification_time(password: str) -> None:
    """Spend the time of one verification, for logins of unknown users."""
    verify_password(_dummy_hash(), password)
