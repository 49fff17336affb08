"""Keep Kubernetes events of instances in the instance log.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

A core/v1 Event about an instance pod (FailedScheduling, Pulling, BackOff,
Killing, ...) is stored raw, as JSON, beside the pod snapshots, so admins
can read why a pod is stuck.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE model_instance_log ADD COLUMN k8s_event jsonb")


def downgrade() -> None:
    op.execute("ALTER TABLE model_instance_log DROP COLUMN k8s_event")
