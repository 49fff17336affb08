"""Fill a schema with expired work requests, their data and instance logs.

Shared by the cleanup tests and `task bench:cleanup`. Rows are generated
inside PostgreSQL, so 200,000 requests load in under a minute.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

_REQUESTS = """
INSERT INTO work_request (id, model_id, status, auth_type, session_id,
    input_size, attempts, request_timestamp, processed_timestamp, last_updated)
SELECT gen_random_uuid(), :model_id,
       CASE WHEN random() < 0.9 THEN 'COMPLETED' ELSE 'FAILED' END,
       'anonymous', gen_random_uuid(), 2, 1,
       now() - make_interval(days => :age_days) - random() * interval '1 day',
       now() - make_interval(days => :age_days),
       now() - make_interval(days => :age_days)
FROM generate_series(1, :count)
"""

_DATA = """
INSERT INTO work_request_data (id, input, result, request_date)
SELECT id, '["CCO", "CCN"]'::jsonb,
       '{"columns": ["mw"], "rows": [{"mw": 46.07}, {"mw": 45.08}]}'::jsonb,
       request_timestamp
FROM work_request
WHERE request_timestamp < now() - make_interval(days => :age_days)
  AND NOT EXISTS (SELECT 1 FROM work_request_data d WHERE d.id = work_request.id)
"""

_LOGS = """
INSERT INTO model_instance_log (model_id, instance_name, request_id, event,
    pod_phase, log_timestamp)
SELECT model_id, 'wr-' || id || '-1', id, 'pod.update', 'Succeeded',
       request_timestamp
FROM work_request
WHERE request_timestamp < now() - make_interval(days => :age_days)
"""


def load_expired(
    connection: Connection, count: int, model_id: str, age_days: int = 8
) -> None:
    """Insert `count` finished requests `age_days` old, with data and a log row."""
    values = {"count": count, "model_id": model_id, "age_days": age_days}
    connection.execute(sa.text(_REQUESTS), values)
    connection.execute(sa.text(_DATA), {"age_days": age_days})
    connection.execute(sa.text(_LOGS), {"age_days": age_days})
