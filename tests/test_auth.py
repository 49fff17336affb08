"""Accounts, sessions and permissions through the auth function, and the
token attacks every function must turn away with a 401 (never a 500)."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid

import jwt
import pytest
import sqlalchemy as sa

from shared import admin_cli, passwords
from shared.settings import get_settings
from tests.conftest import load_function

PASSWORD = "violet-harbour-42-lantern"


def signup(client, username="ada", email=None, password=PASSWORD):
    return client.post(
        "/signup",
        json={
            "username": username,
            "email": email or f"{username}@example.org",
            "password": password,
        },
    )


def login(client, username="ada", password=PASSWORD, address="10.1.1.1"):
    return client.post(
        "/login",
        json={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def user(auth_client):
    assert signup(auth_client).status_code == 201
    body = login(auth_client).get_json()
    return body


@pytest.fixture
def admin(auth_client, db):
    assert signup(auth_client, "root-admin").status_code == 201
    admin_cli.change("grant", "root-admin")
    return login(auth_client, "root-admin").get_json()


# --- signup ---------------------------------------------------------------

SIGNUPS = [
    # (name, body, status, field)
    (
        "missing username",
        {"email": "a@example.org", "password": PASSWORD},
        422,
        "username",
    ),
    (
        "short username",
        {"username": "ab", "email": "a@example.org", "password": PASSWORD},
        422,
        "username",
    ),
    (
        "username with space",
        {"username": "ada l", "email": "a@example.org", "password": PASSWORD},
        422,
        "username",
    ),
    (
        "username leading dot",
        {"username": ".ada", "email": "a@example.org", "password": PASSWORD},
        422,
        "username",
    ),
    (
        "username too long",
        {"username": "a" * 33, "email": "a@example.org", "password": PASSWORD},
        422,
        "username",
    ),
    ("missing email", {"username": "ada", "password": PASSWORD}, 422, "email"),
    (
        "email without at",
        {"username": "ada", "email": "ada.example.org", "password": PASSWORD},
        422,
        "email",
    ),
    (
        "email without dot",
        {"username": "ada", "email": "ada@localhost", "password": PASSWORD},
        422,
        "email",
    ),
    (
        "email with space",
        {"username": "ada", "email": "a da@example.org", "password": PASSWORD},
        422,
        "email",
    ),
    (
        "missing password",
        {"username": "ada", "email": "a@example.org"},
        422,
        "password",
    ),
    (
        "short password",
        {"username": "ada", "email": "a@example.org", "password": "short1!"},
        422,
        "password",
    ),
    (
        "common password",
        {"username": "ada", "email": "a@example.org", "password": "password1234"},
        422,
        "password",
    ),
    (
        "common password any case",
        {"username": "ada", "email": "a@example.org", "password": "QwertyQwerty"},
        422,
        "password",
    ),
    (
        "password is username",
        {
            "username": "lovelace1815",
            "email": "a@example.org",
            "password": "lovelace1815",
        },
        422,
        "password",
    ),
    (
        "password has username",
        {
            "username": "lovelace",
            "email": "a@example.org",
            "password": "my-LOVELACE-pass",
        },
        422,
        "password",
    ),
    (
        "password repeats",
        {"username": "ada", "email": "a@example.org", "password": "abababababab"},
        422,
        "password",
    ),
    (
        "password not text",
        {"username": "ada", "email": "a@example.org", "password": 123456789012},
        422,
        "password",
    ),
    (
        "password too long",
        {"username": "ada", "email": "a@example.org", "password": "x1" * 129},
        422,
        "password",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [case[1:] for case in SIGNUPS],
    ids=[case[0] for case in SIGNUPS],
)
def test_signup_rejections(auth_client, db, body, status, field):
    response = auth_client.post("/signup", json=body)

    assert response.status_code == status
    assert response.get_json()["field"] == field
    assert response.get_json()["detail"].startswith(f"{field}:")
    with db.connect() as connection:
        assert (
            connection.execute(sa.text("SELECT count(*) FROM app_user")).scalar() == 0
        )


def test_signup_stores_argon2id_hash(auth_client, db):
    response = signup(auth_client)

    assert response.status_code == 201
    assert response.get_json()["user"]["username"] == "ada"
    assert "password" not in json.dumps(response.get_json())
    with db.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT password_hash FROM app_user")
        ).scalar()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


@pytest.mark.parametrize(
    ("username", "email", "error"),
    [
        ("ADA", "other@example.org", "username_taken"),
        ("other", "ADA@Example.ORG", "email_taken"),
    ],
)
def test_signup_unique_ignoring_case(auth_client, db, username, email, error):
    signup(auth_client, "ada", "ada@example.org")

    response = signup(auth_client, username, email)

    assert response.status_code == 409
    assert response.get_json()["error"] == error


# --- login, refresh, logout -----------------------------------------------


def test_login_returns_user_permissions_and_tokens(auth_client, user):
    assert user["user"]["username"] == "ada"
    assert user["permissions"] == []
    assert user["session"]["auth_type"] == "user"
    claims = jwt.decode(user["access_token"], options={"verify_signature": False})
    assert claims["typ"] == "access"
    assert claims["kind"] == "user"
    assert claims["sid"] == user["session"]["id"]
    assert claims["exp"] - claims["iat"] == get_settings().access_token_ttl_seconds
    assert user["refresh_token"].startswith(user["session"]["id"] + ".")


def test_refresh_token_stored_only_as_hash(auth_client, user, db):
    secret = user["refresh_token"].split(".", 1)[1]

    with db.connect() as connection:
        dump = connection.execute(
            sa.text("SELECT auth_session::text FROM auth_session")
        ).scalar()

    assert secret not in dump


def test_unknown_user_and_wrong_password_look_alike(auth_client, user):
    wrong = login(auth_client, "ada", "not-the-password-at-all")
    unknown = login(auth_client, "nobody", "not-the-password-at-all")

    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json() == unknown.get_json()


def test_login_case_insensitive_username(auth_client, user):
    assert login(auth_client, "ADA").status_code == 200


def test_refresh_rotates_and_keeps_user(auth_client, user):
    response = auth_client.post(
        "/refresh", json={"refresh_token": user["refresh_token"]}
    )

    body = response.get_json()
    assert response.status_code == 200
    assert body["refresh_token"] != user["refresh_token"]
    assert body["user"]["username"] == "ada"
    assert body["session"]["id"] == user["session"]["id"]


def test_refresh_retry_within_grace_succeeds(auth_client, user):
    first = auth_client.post("/refresh", json={"refresh_token": user["refresh_token"]})
    retry = auth_client.post("/refresh", json={"refresh_token": user["refresh_token"]})

    assert first.status_code == 200
    assert retry.status_code == 200
    later = auth_client.post(
        "/refresh", json={"refresh_token": first.get_json()["refresh_token"]}
    )
    assert later.status_code == 200


def age_rotation(db, session_id, seconds=3600):
    with db.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE auth_session SET rotated_at = rotated_at - make_interval(secs => :s) "
                "WHERE id = :id"
            ),
            {"s": seconds, "id": session_id},
        )


def test_refresh_reuse_after_rotation_ends_session(auth_client, user, db):
    session_id = user["session"]["id"]
    age_rotation(db, session_id)
    rotated = auth_client.post(
        "/refresh", json={"refresh_token": user["refresh_token"]}
    )
    age_rotation(db, session_id)

    reused = auth_client.post("/refresh", json={"refresh_token": user["refresh_token"]})
    newest = auth_client.post(
        "/refresh", json={"refresh_token": rotated.get_json()["refresh_token"]}
    )

    assert rotated.status_code == 200
    assert reused.status_code == 401
    assert reused.get_json()["error"] == "invalid_token"
    assert newest.status_code == 401
    with db.connect() as connection:
        reason = connection.execute(
            sa.text("SELECT revoked_reason FROM auth_session")
        ).scalar()
    assert "reused" in reason


def test_refresh_never_fails_while_session_valid(auth_client, user, db):
    token = user["refresh_token"]
    for _ in range(5):
        age_rotation(db, user["session"]["id"])
        response = auth_client.post("/refresh", json={"refresh_token": token})
        assert response.status_code == 200
        token = response.get_json()["refresh_token"]


def test_logout_ends_refresh(auth_client, user):
    response = auth_client.post("/logout", headers=bearer(user["access_token"]))
    refreshed = auth_client.post(
        "/refresh", json={"refresh_token": user["refresh_token"]}
    )

    assert response.status_code == 200
    assert refreshed.status_code == 401
    assert refreshed.get_json()["error"] == "invalid_token"


def test_expired_session_cannot_refresh(auth_client, user, db):
    with db.begin() as connection:
        connection.execute(
            sa.text("UPDATE auth_session SET expires_at = now() - interval '1 s'")
        )

    response = auth_client.post(
        "/refresh", json={"refresh_token": user["refresh_token"]}
    )

    assert response.status_code == 401
    assert "expired" in response.get_json()["detail"]


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "no-dot",
        "not-a-uuid.secret",
        f"{uuid.uuid4()}.",
        f"{uuid.uuid4()}.guess",
    ],
)
def test_refresh_rejects_bad_tokens(auth_client, db, token):
    response = auth_client.post("/refresh", json={"refresh_token": token})

    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"


def test_password_rehashed_when_parameters_change(auth_client, user, db, monkeypatch):
    with db.connect() as connection:
        before = connection.execute(
            sa.text("SELECT password_hash FROM app_user")
        ).scalar()
    monkeypatch.setenv("PASSWORD_TIME_COST", "2")
    get_settings.cache_clear()
    passwords.hasher.cache_clear()
    try:
        assert login(auth_client).status_code == 200
        with db.connect() as connection:
            after = connection.execute(
                sa.text("SELECT password_hash FROM app_user")
            ).scalar()
    finally:
        monkeypatch.setenv("PASSWORD_TIME_COST", "1")
        get_settings.cache_clear()
        passwords.hasher.cache_clear()

    assert ",t=1," in before
    assert ",t=2," in after
    assert login(auth_client).status_code == 200


# --- throttling -------------------------------------------------------------


def test_account_throttled_after_failures(auth_client, user):
    limit = get_settings().login_max_failures_per_account_address
    for _ in range(limit):
        assert login(auth_client, password="wrong-password-here").status_code == 401

    blocked = login(auth_client)

    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0
    assert blocked.get_json()["error"] == "too_many_attempts"


def test_unknown_account_throttled_the_same(auth_client, db):
    limit = get_settings().login_max_failures_per_account_address
    for _ in range(limit):
        login(auth_client, "ghost", "wrong-password-here")

    assert login(auth_client, "ghost", "wrong-password-here").status_code == 429


def test_address_throttled_across_accounts(auth_client, db):
    limit = get_settings().login_max_failures_per_address
    for index in range(limit):
        login(auth_client, f"user{index}", "wrong-password-here", address="10.9.9.9")

    assert (
        login(auth_client, "fresh", "wrong-password", address="10.9.9.9").status_code
        == 429
    )
    assert (
        login(auth_client, "fresh", "wrong-password", address="10.9.9.8").status_code
        == 401
    )


def test_success_clears_account_failures(auth_client, user):
    limit = get_settings().login_max_failures_per_account_address
    for _ in range(limit - 1):
        login(auth_client, password="wrong-password-here")
    assert login(auth_client).status_code == 200

    for _ in range(limit - 1):
        login(auth_client, password="wrong-password-here")
    assert login(auth_client).status_code == 200


# --- anonymous sessions -----------------------------------------------------


def test_anonymous_client_id_accepted_once(auth_client, db):
    session_id = str(uuid.uuid4())

    first = auth_client.post("/anonymous", json={"session_id": session_id})
    again = auth_client.post("/anonymous", json={"session_id": session_id})

    assert first.status_code == 201
    assert first.get_json()["session"]["id"] == session_id
    assert again.status_code == 409
    assert again.get_json()["error"] == "session_id_taken"


def test_anonymous_bad_client_id(auth_client, db):
    response = auth_client.post("/anonymous", json={"session_id": "1234"})

    assert response.status_code == 422
    assert response.get_json()["field"] == "session_id"


def test_anonymous_session_expires(auth_client, db):
    body = auth_client.post("/anonymous").get_json()
    with db.begin() as connection:
        connection.execute(sa.text("UPDATE auth_session SET expires_at = now()"))

    response = auth_client.post(
        "/refresh", json={"refresh_token": body["refresh_token"]}
    )

    assert response.status_code == 401


def test_anonymous_cannot_reach_user_or_admin_endpoints(auth_client, db):
    token = auth_client.post("/anonymous").get_json()["access_token"]

    me = auth_client.get("/me", headers=bearer(token))
    grant = auth_client.put(
        "/users/ada/permissions", json={"permissions": ["ADMIN"]}, headers=bearer(token)
    )

    assert me.status_code == 403
    assert grant.status_code == 403


# --- permissions ------------------------------------------------------------


def test_admin_endpoint_rejects_plain_user(auth_client, user):
    response = auth_client.put(
        "/users/ada/permissions",
        json={"permissions": ["ADMIN"]},
        headers=bearer(user["access_token"]),
    )

    assert response.status_code == 403
    assert response.get_json()["error"] == "admin_required"


def test_permission_change_applies_at_refresh(auth_client, user, admin):
    granted = auth_client.put(
        "/users/ada/permissions",
        json={"permissions": ["ADMIN"]},
        headers=bearer(admin["access_token"]),
    )
    refreshed = auth_client.post(
        "/refresh", json={"refresh_token": user["refresh_token"]}
    ).get_json()

    assert granted.status_code == 200
    old_claims = jwt.decode(user["access_token"], options={"verify_signature": False})
    assert old_claims["perms"] == []
    assert refreshed["permissions"] == ["ADMIN"]
    me = auth_client.get("/me", headers=bearer(refreshed["access_token"]))
    assert me.get_json()["permissions"] == ["ADMIN"]


@pytest.mark.parametrize(
    ("body", "status"),
    [({"permissions": ["ROOT"]}, 422), ({"permissions": "ADMIN"}, 422), ({}, 422)],
)
def test_permission_change_validated(auth_client, admin, body, status):
    signup(auth_client, "grace")

    response = auth_client.put(
        "/users/grace/permissions", json=body, headers=bearer(admin["access_token"])
    )

    assert response.status_code == status


def test_permission_change_unknown_user(auth_client, admin):
    response = auth_client.put(
        "/users/nobody/permissions",
        json={"permissions": []},
        headers=bearer(admin["access_token"]),
    )

    assert response.status_code == 404


def test_admin_cli_unknown_user(db, capsys):
    assert admin_cli.main(["grant", "nobody"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert admin_cli.main(["promote", "x"]) == 2


# --- token attacks ------------------------------------------------------------


def forge(claims: dict, key: str | None = None, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key or get_settings().secret_key, algorithm=algorithm)


def valid_claims(**changes) -> dict:
    now = int(time.time())
    claims = {
        "sub": str(uuid.uuid4()),
        "sid": str(uuid.uuid4()),
        "kind": "user",
        "perms": ["ADMIN"],
        "typ": "access",
        "iat": now,
        "exp": now + 300,
    }
    claims.update(changes)
    return {key: value for key, value in claims.items() if value is not None}


def unsigned(claims: dict) -> str:
    def part(value: dict) -> str:
        raw = json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


ATTACKS = [
    ("alg none", lambda: unsigned(valid_claims()), "invalid_token"),
    (
        "HS512 instead of HS256",
        lambda: forge(valid_claims(), algorithm="HS512"),
        "invalid_token",
    ),
    ("wrong key", lambda: forge(valid_claims(), key="k" * 48), "invalid_token"),
    ("missing exp", lambda: forge(valid_claims(exp=None)), "invalid_token"),
    ("missing iat", lambda: forge(valid_claims(iat=None)), "invalid_token"),
    ("non-numeric iat", lambda: forge(valid_claims(iat="yesterday")), "invalid_token"),
    ("missing sub", lambda: forge(valid_claims(sub=None)), "invalid_token"),
    ("sub not uuid", lambda: forge(valid_claims(sub="admin")), "invalid_token"),
    ("unknown kind", lambda: forge(valid_claims(kind="root")), "invalid_token"),
    ("job token type", lambda: forge(valid_claims(typ="job")), "invalid_token"),
    (
        "expired",
        lambda: forge(
            valid_claims(iat=int(time.time()) - 900, exp=int(time.time()) - 60)
        ),
        "token_expired",
    ),
    ("garbage", lambda: "not.a.token", "invalid_token"),
    ("empty segments", lambda: "..", "invalid_token"),
]


@pytest.mark.parametrize(
    ("make_token", "error"),
    [case[1:] for case in ATTACKS],
    ids=[case[0] for case in ATTACKS],
)
def test_token_attacks_get_401(auth_client, requests_client, make_token, error):
    token = make_token()

    for client, path in ((auth_client, "/me"), (requests_client, "/")):
        response = client.get(path, headers=bearer(token))
        assert response.status_code == 401
        assert response.get_json()["error"] == error


def test_expiry_within_leeway_still_accepted(requests_client, db):
    now = int(time.time())
    token = forge(valid_claims(kind="anonymous", iat=now - 300, exp=now - 2))

    assert requests_client.get("/", headers=bearer(token)).status_code == 200


def test_anonymous_token_on_user_endpoint(auth_client, db):
    token = forge(valid_claims(kind="anonymous", perms=["ADMIN"]))

    assert auth_client.get("/me", headers=bearer(token)).status_code == 403
    assert (
        auth_client.put(
            "/users/x/permissions", json={"permissions": []}, headers=bearer(token)
        ).status_code
        == 403
    )


def test_deleted_user_token_rejected(auth_client, user, db):
    with db.begin() as connection:
        connection.execute(sa.text("DELETE FROM app_user"))

    me = auth_client.get("/me", headers=bearer(user["access_token"]))
    refreshed = auth_client.post(
        "/refresh", json={"refresh_token": user["refresh_token"]}
    )

    assert me.status_code == 401
    assert me.get_json()["error"] == "invalid_token"
    assert refreshed.status_code == 401


def test_user_requests_are_owned_by_user(
    auth_client, submit_client, requests_client, user
):
    headers = bearer(user["access_token"])
    created = submit_client.post(
        "/", json={"model_id": "demo-molweight", "inputs": ["CCO"]}, headers=headers
    )
    other = auth_client.post("/anonymous").get_json()["access_token"]

    assert created.status_code == 201
    request_id = created.get_json()["id"]
    assert requests_client.get(f"/{request_id}", headers=headers).status_code == 200
    assert (
        requests_client.get(f"/{request_id}", headers=bearer(other)).status_code == 404
    )


def test_owner_not_locked_out_by_stranger(auth_client, user):
    limit = get_settings().login_max_failures_per_account_address
    for _ in range(limit):
        login(auth_client, password="wrong-password-here", address="10.66.0.1")

    assert login(auth_client, address="10.66.0.1").status_code == 429
    assert login(auth_client, address="10.1.1.1").status_code == 200


def test_parallel_guesses_all_counted(auth_client, user):
    limit = get_settings().login_max_failures_per_account_address
    codes: list[int] = []
    barrier = threading.Barrier(12)

    def guess(index: int) -> None:
        client = load_function("auth", "auth").test_client()
        barrier.wait(timeout=30)
        codes.append(login(client, "ada", f"wrong-password-{index}").status_code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(codes) == 12
    assert codes.count(401) == limit
    assert codes.count(429) == 12 - limit


def test_refresh_retry_after_normal_rotation(auth_client, user, db):
    age_rotation(db, user["session"]["id"])

    first = auth_client.post("/refresh", json={"refresh_token": user["refresh_token"]})
    retry = auth_client.post("/refresh", json={"refresh_token": user["refresh_token"]})
    later = auth_client.post(
        "/refresh", json={"refresh_token": first.get_json()["refresh_token"]}
    )

    assert first.status_code == 200
    assert retry.status_code == 200
    assert later.status_code == 200


def test_many_parallel_refreshes_keep_session(auth_client, user, db):
    age_rotation(db, user["session"]["id"])
    codes: list[int] = []
    tokens: list[str] = []
    barrier = threading.Barrier(8)

    def refresh() -> None:
        client = load_function("auth", "auth").test_client()
        barrier.wait(timeout=30)
        response = client.post(
            "/refresh", json={"refresh_token": user["refresh_token"]}
        )
        codes.append(response.status_code)
        if response.status_code == 200:
            tokens.append(response.get_json()["refresh_token"])

    threads = [threading.Thread(target=refresh) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert codes == [200] * 8
    for token in tokens:
        response = auth_client.post("/refresh", json={"refresh_token": token})
        assert response.status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/login", {"username": "a\x00b", "password": PASSWORD}),
        ("/login", {"username": "\ud800", "password": PASSWORD}),
        ("/login", {"username": "ada", "password": "\ud800-abcdefghijk"}),
        (
            "/signup",
            {"username": "nul", "email": "a\x00b@example.org", "password": PASSWORD},
        ),
        (
            "/signup",
            {
                "username": "pwd",
                "email": "p@example.org",
                "password": "abcdefghijkl\ud800",
            },
        ),
        ("/refresh", {"refresh_token": f"{uuid.uuid4()}.\ud800"}),
    ],
)
def test_unstorable_text_rejected(auth_client, db, path, body):
    response = auth_client.post(path, json=body)

    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_text"


@pytest.mark.parametrize(
    ("username", "email", "field"),
    [
        ("ada\n", "nl@example.org", "username"),
        ("cyril", "\u0430da@example.org", "email"),
        ("ctrl", "a\x01b@example.org", "email"),
        ("tags", "<script>@example.org", "email"),
        ("hyphen", "d@-.-", "email"),
        ("wide", "\uff41da@example.org", "email"),
    ],
)
def test_lookalike_or_odd_names_rejected(auth_client, db, username, email, field):
    response = signup(auth_client, username, email)

    assert response.status_code == 422
    assert response.get_json()["field"] == field


def test_signup_non_string_field_says_type(auth_client, db):
    response = auth_client.post(
        "/signup", json={"username": 5, "email": "x@example.org", "password": PASSWORD}
    )

    assert response.status_code == 422
    assert "must be a string" in response.get_json()["detail"]


def test_bearer_with_tab_accepted(auth_client, user):
    response = auth_client.get(
        "/me", headers={"Authorization": "Bearer\t" + user["access_token"]}
    )

    assert response.status_code == 200


def test_padded_common_password_rejected(auth_client, db):
    response = signup(auth_client, "ada", password=" password1234 ")

    assert response.status_code == 422


def test_admin_path_with_nul_is_404(auth_client, admin):
    response = auth_client.put(
        "/users/a%00b/permissions",
        json={"permissions": []},
        headers=bearer(admin["access_token"]),
    )

    assert response.status_code == 404
