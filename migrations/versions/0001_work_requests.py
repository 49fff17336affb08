"""Create models, work requests, their data and the instance log.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE model (
            id text PRIMARY KEY
                CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,39}$'),
            enabled boolean NOT NULL DEFAULT true,
            execution_mode text NOT NULL
                CHECK (execution_mode IN ('sync', 'async')),
            max_instances integer CHECK (max_instances >= 1),
            image text NOT NULL,
            image_tag text NOT NULL DEFAULT 'latest',
            description text NOT NULL DEFAULT '',
            timeout_seconds integer NOT NULL DEFAULT 3600
                CHECK (timeout_seconds >= 1),
            cpu_request_millicores integer NOT NULL DEFAULT 100,
            cpu_limit_millicores integer NOT NULL DEFAULT 1000,
            memory_request_mib integer NOT NULL DEFAULT 512,
            memory_limit_mib integer NOT NULL DEFAULT 2048,
            last_updated timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE work_request (
            id uuid PRIMARY KEY,
            model_id text NOT NULL REFERENCES model (id),
            status text NOT NULL CHECK (status IN (
                'REQUESTED', 'SCHEDULING', 'PROCESSING', 'COMPLETED', 'FAILED')),
            status_reason text,
            auth_type text NOT NULL CHECK (auth_type IN ('anonymous', 'user')),
            user_id uuid,
            session_id uuid,
            input_size integer NOT NULL CHECK (input_size >= 1),
            attempts integer NOT NULL DEFAULT 0,
            instance_name text,
            request_timestamp timestamptz NOT NULL DEFAULT now(),
            pod_ready_timestamp timestamptz,
            job_submitted_timestamp timestamptz,
            processed_timestamp timestamptz,
            last_updated timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT work_request_owner CHECK (
                (auth_type = 'user' AND user_id IS NOT NULL)
                OR (auth_type = 'anonymous' AND session_id IS NOT NULL))
        )
        """
    )
    # The scheduler takes the oldest REQUESTED request of a model and counts
    # the model's running ones; owners list their newest requests first.
    op.execute(
        "CREATE INDEX work_request_queue ON work_request "
        "(model_id, request_timestamp) WHERE status = 'REQUESTED'"
    )
    op.execute(
        "CREATE INDEX work_request_active ON work_request (model_id) "
        "WHERE status IN ('SCHEDULING', 'PROCESSING')"
    )
    op.execute(
        "CREATE INDEX work_request_by_session ON work_request "
        "(session_id, request_timestamp DESC) WHERE session_id IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX work_request_by_user ON work_request "
        "(user_id, request_timestamp DESC) WHERE user_id IS NOT NULL"
    )
    op.execute(
        """
        CREATE TABLE work_request_data (
            id uuid PRIMARY KEY REFERENCES work_request (id) ON DELETE CASCADE,
            input jsonb NOT NULL,
            result jsonb,
            request_date timestamptz NOT NULL
        )
        """
    )
    op.execute(
        "CREATE INDEX work_request_data_request_date "
        "ON work_request_data (request_date)"
    )
    op.execute(
        """
        CREATE TABLE model_instance_log (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            model_id text NOT NULL,
            instance_name text NOT NULL,
            request_id uuid,
            event text NOT NULL,
            pod_phase text,
            detail text,
            pod jsonb,
            log_timestamp timestamptz NOT NULL DEFAULT clock_timestamp()
        )
        """
    )
    op.execute(
        "CREATE INDEX model_instance_log_instance "
        "ON model_instance_log (instance_name, id)"
    )
    op.execute(
        "CREATE INDEX model_instance_log_request ON model_instance_log (request_id, id)"
    )
    op.execute(
        "CREATE INDEX model_instance_log_timestamp "
        "ON model_instance_log (log_timestamp)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE model_instance_log")
    op.execute("DROP TABLE work_request_data")
    op.execute("DROP TABLE work_request")
    op.execute("DROP TABLE model")
