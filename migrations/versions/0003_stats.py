"""Add stored durations and the covering index the stats queries read.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

The three durations are computed once, when a timestamp is written, instead
of in every stats query. The index leads with model id, then request time,
and carries every column the stats filters and figures need, so a stats
query over a date range is an index-only scan that already arrives grouped
by model (no sort). `docs/benchmarks.md` shows the plans.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE work_request
        ADD COLUMN model_seconds double precision GENERATED ALWAYS AS
            (date_part('epoch', processed_timestamp - job_submitted_timestamp))
            STORED,
        ADD COLUMN processing_seconds double precision GENERATED ALWAYS AS
            (date_part('epoch', processed_timestamp - request_timestamp)) STORED,
        ADD COLUMN queue_seconds double precision GENERATED ALWAYS AS
            (date_part('epoch', pod_ready_timestamp - request_timestamp)) STORED
        """
    )
    op.execute(
        """
        CREATE INDEX work_request_stats ON work_request (model_id, request_timestamp)
        INCLUDE (status, auth_type, user_id, session_id,
                 model_seconds, processing_seconds, queue_seconds)
        """
    )


def downgrade() -> None:
    op.execute("DROP INDEX work_request_stats")
    op.execute(
        "ALTER TABLE work_request DROP COLUMN model_seconds, "
        "DROP COLUMN processing_seconds, DROP COLUMN queue_seconds"
    )
