"""Add user accounts, permissions, sessions and login throttling.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE app_user (
            id uuid PRIMARY KEY,
            username text NOT NULL,
            email text NOT NULL,
            password_hash text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            last_updated timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # Usernames and emails are unique whatever their case.
    op.execute("CREATE UNIQUE INDEX app_user_username ON app_user (lower(username))")
    op.execute("CREATE UNIQUE INDEX app_user_email ON app_user (lower(email))")
    op.execute(
        """
        CREATE TABLE user_permission (
            user_id uuid NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
            permission text NOT NULL CHECK (permission IN ('ADMIN')),
            granted_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, permission)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE auth_session (
            id uuid PRIMARY KEY,
            kind text NOT NULL CHECK (kind IN ('user', 'anonymous')),
            user_id uuid REFERENCES app_user (id) ON DELETE CASCADE,
            refresh_hashes bytea[] NOT NULL,
            previous_hashes bytea[] NOT NULL DEFAULT '{}',
            retired_hashes bytea[] NOT NULL DEFAULT '{}',
            rotated_at timestamptz NOT NULL DEFAULT now(),
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            revoked_at timestamptz,
            revoked_reason text,
            CONSTRAINT auth_session_owner
                CHECK ((kind = 'user') = (user_id IS NOT NULL))
        )
        """
    )
    op.execute(
        "CREATE INDEX auth_session_user ON auth_session (user_id) "
        "WHERE user_id IS NOT NULL"
    )
    op.execute("CREATE INDEX auth_session_expires ON auth_session (expires_at)")
    op.execute(
        """
        CREATE TABLE login_failure (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            account text NOT NULL,
            client_address text NOT NULL,
            failed_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE INDEX login_failure_account ON login_failure (account, failed_at)"
    )
    op.execute(
        "CREATE INDEX login_failure_address "
        "ON login_failure (client_address, failed_at)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE login_failure")
    op.execute("DROP TABLE auth_session")
    op.execute("DROP TABLE user_permission")
    op.execute("DROP TABLE app_user")
