"""Table definitions for queries (SQLAlchemy Core).

The migrations in `migrations/versions` create these tables; this module only
describes them to the query builder. Tables carry no schema name: the schema
comes from each connection's `search_path` (see `shared.db`).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

metadata = sa.MetaData()

model = sa.Table(
    "model",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("execution_mode", sa.Text, nullable=False),
    sa.Column("max_instances", sa.Integer),
    sa.Column("image", sa.Text, nullable=False),
    sa.Column("image_tag", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("timeout_seconds", sa.Integer, nullable=False),
    sa.Column("cpu_request_millicores", sa.Integer, nullable=False),
    sa.Column("cpu_limit_millicores", sa.Integer, nullable=False),
    sa.Column("memory_request_mib", sa.Integer, nullable=False),
    sa.Column("memory_limit_mib", sa.Integer, nullable=False),
    sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
)

work_request = sa.Table(
    "work_request",
    metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True),
    sa.Column("model_id", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("status_reason", sa.Text),
    sa.Column("auth_type", sa.Text, nullable=False),
    sa.Column("user_id", UUID(as_uuid=False)),
    sa.Column("session_id", UUID(as_uuid=False)),
    sa.Column("input_size", sa.Integer, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("instance_name", sa.Text),
    sa.Column("request_timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("pod_ready_timestamp", sa.DateTime(timezone=True)),
    sa.Column("job_submitted_timestamp", sa.DateTime(timezone=True)),
    sa.Column("processed_timestamp", sa.DateTime(timezone=True)),
    sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
)

work_request_data = sa.Table(
    "work_request_data",
    metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True),
    sa.Column("input", JSONB, nullable=False),
    sa.Column("result", JSONB),
    sa.Column("request_date", sa.DateTime(timezone=True), nullable=False),
)

model_instance_log = sa.Table(
    "model_instance_log",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("model_id", sa.Text, nullable=False),
    sa.Column("instance_name", sa.Text, nullable=False),
    sa.Column("request_id", UUID(as_uuid=False)),
    sa.Column("event", sa.Text, nullable=False),
    sa.Column("pod_phase", sa.Text),
    sa.Column("detail", sa.Text),
    sa.Column("pod", JSONB),
    sa.Column("k8s_event", JSONB),
    sa.Column("log_timestamp", sa.DateTime(timezone=True), nullable=False),
)

app_user = sa.Table(
    "app_user",
    metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True),
    sa.Column("username", sa.Text, nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
)

user_permission = sa.Table(
    "user_permission",
    metadata,
    sa.Column("user_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("permission", sa.Text, primary_key=True),
    sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
)

auth_session = sa.Table(
    "auth_session",
    metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("user_id", UUID(as_uuid=False)),
    sa.Column("refresh_hashes", ARRAY(sa.LargeBinary), nullable=False),
    sa.Column("previous_hashes", ARRAY(sa.LargeBinary), nullable=False),
    sa.Column("retired_hashes", ARRAY(sa.LargeBinary), nullable=False),
    sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("revoked_reason", sa.Text),
)

login_failure = sa.Table(
    "login_failure",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("client_address", sa.Text, nullable=False),
    sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("admin_user_id", UUID(as_uuid=False), nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("request_id", UUID(as_uuid=False)),
    sa.Column("client_address", sa.Text, nullable=False),
    sa.Column("user_agent", sa.Text),
    sa.Column("detail", sa.Text),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)
