"""Load realistic work requests into a scratch schema, for stats benchmarks.

Rows are generated inside PostgreSQL (generate_series and random()), so a
million rows, with both tables and their indexes, load in 47 to 90 s on a
2-vCPU machine. The mix is MODELS models with skewed popularity over DAYS
days ending now, with 85 % COMPLETED, 10 % FAILED and the rest in flight.
70 % of requests come from anonymous sessions and 30 % from users. Model
run times differ per model, and queue waits range from seconds to minutes.
Failed requests lack a job start time when they failed before the model
ran (a third of them).

The previous system's table (`workrequest`, timestamps without time zone,
its four indexes) is filled with the same rows, for side-by-side queries.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

MODELS = 100
DAYS = 30
USERS = 500
SESSIONS = 5000

# One row per request: owner, status and durations, drawn once and used for
# both tables. `u` values are independent uniform draws.
_GENERATE = """
CREATE TEMP TABLE generated ON COMMIT DROP AS
SELECT
    gen_random_uuid() AS id,
    'model-' || lpad(model_number::text, 3, '0') AS model_id,
    now() - random() * make_interval(days => :days) AS requested,
    random() AS status_draw,
    random() AS owner_draw,
    floor(random() * :users)::int AS user_number,
    floor(random() * :sessions)::int AS session_number,
    exp(random() * 4.5) AS queue_seconds,
    exp(random() * 5) / 4 * (1 + mod(model_number, 5)) AS run_seconds,
    1 + floor(random() * 1000)::int AS input_size
FROM (
    SELECT floor(power(random(), 1.5) * :models)::int AS model_number
    FROM generate_series(1, :rows)
) AS drawn
"""

_INSERT_NEW = """
INSERT INTO work_request (
    id, model_id, status, status_reason, auth_type, user_id, session_id,
    input_size, attempts, request_timestamp, pod_ready_timestamp,
    job_submitted_timestamp, processed_timestamp, last_updated)
SELECT
    id, model_id,
    CASE WHEN status_draw < 0.85 THEN 'COMPLETED'
         WHEN status_draw < 0.95 THEN 'FAILED'
         WHEN status_draw < 0.97 THEN 'REQUESTED'
         WHEN status_draw < 0.98 THEN 'SCHEDULING'
         ELSE 'PROCESSING' END,
    CASE WHEN status_draw >= 0.85 AND status_draw < 0.95 THEN 'model failed' END,
    CASE WHEN owner_draw < 0.7 THEN 'anonymous' ELSE 'user' END,
    CASE WHEN owner_draw >= 0.7 THEN
        ('00000000-0000-4000-8000-' || lpad(user_number::text, 12, '0'))::uuid END,
    CASE WHEN owner_draw < 0.7 THEN
        ('11111111-0000-4000-8000-' || lpad(session_number::text, 12, '0'))::uuid END,
    input_size, 1, requested,
    CASE WHEN status_draw < 0.97 AND status_draw >= 0.95 THEN NULL
         ELSE requested + make_interval(secs => queue_seconds * 0.8) END,
    CASE WHEN status_draw < 0.85
              OR (status_draw < 0.95 AND status_draw >= 0.885)
              OR status_draw >= 0.98
         THEN requested + make_interval(secs => queue_seconds) END,
    CASE WHEN status_draw < 0.95
         THEN requested + make_interval(secs => queue_seconds + run_seconds) END,
    requested
FROM generated
"""

_INSERT_MODELS = """
INSERT INTO model (id, execution_mode, image)
SELECT 'model-' || lpad(n::text, 3, '0'), 'sync', 'bench/model'
FROM generate_series(0, :models - 1) AS n
ON CONFLICT DO NOTHING
"""

_CREATE_OLD = """
CREATE TABLE workrequest (
    id bigserial PRIMARY KEY,
    modelid text NOT NULL,
    userid text NOT NULL,
    requestdate timestamp NOT NULL,
    requeststatus text NOT NULL,
    requeststatusreason text,
    modeljobid text,
    metadata jsonb NOT NULL,
    lastupdated timestamp NOT NULL,
    podreadytimestamp timestamp,
    jobsubmissiontimestamp timestamp,
    processedtimestamp timestamp,
    inputsize int,
    serverid text
)
"""

_OLD_INDEXES = (
    "CREATE INDEX ON workrequest (modelid, requestdate)",
    "CREATE INDEX ON workrequest (userid, requestdate)",
    "CREATE INDEX ON workrequest (requeststatus, requestdate)",
    "CREATE INDEX ON workrequest (modelid, requeststatus, requestdate)",
)

_INSERT_OLD = """
INSERT INTO workrequest (
    modelid, userid, requestdate, requeststatus, requeststatusreason,
    metadata, lastupdated, podreadytimestamp, jobsubmissiontimestamp,
    processedtimestamp, inputsize)
SELECT model_id, coalesce(user_id, session_id)::text,
       request_timestamp AT TIME ZONE 'UTC', status, status_reason,
       jsonb_build_object('sessionId', session_id), last_updated AT TIME ZONE 'UTC',
       pod_ready_timestamp AT TIME ZONE 'UTC',
       job_submitted_timestamp AT TIME ZONE 'UTC',
       processed_timestamp AT TIME ZONE 'UTC', input_size + 1
FROM work_request
"""


def load(connection: Connection, rows: int) -> None:
    """Fill work_request (migrated schema) and the previous `workrequest`."""
    params = {
        "rows": rows,
        "models": MODELS,
        "days": DAYS,
        "users": USERS,
        "sessions": SESSIONS,
    }
    connection.execute(sa.text(_INSERT_MODELS), params)
    connection.execute(sa.text(_GENERATE), params)
    connection.execute(sa.text(_INSERT_NEW))
    connection.execute(sa.text(_CREATE_OLD))
    connection.execute(sa.text(_INSERT_OLD))
    for statement in _OLD_INDEXES:
        connection.execute(sa.text(statement))
