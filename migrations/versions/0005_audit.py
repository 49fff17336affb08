"""Add the audit log of administrators' views of sensitive data.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE audit_log (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            admin_user_id uuid NOT NULL,
            action text NOT NULL,
            request_id uuid,
            client_address text NOT NULL,
            user_agent text,
            detail text,
            recorded_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX audit_log_recorded ON audit_log (recorded_at DESC, id)")
    op.execute("CREATE INDEX audit_log_request ON audit_log (request_id, id)")
    # The admin list pages all requests newest first.
    op.execute(
        "CREATE INDEX work_request_newest ON work_request (request_timestamp DESC, id)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX work_request_newest")
    op.execute("DROP TABLE audit_log")
