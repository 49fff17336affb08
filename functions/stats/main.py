"""Per-model statistics of work requests (ADMIN only).

`GET /` with filters `model_id`, `user_id`, `session_id`, `auth_type`,
`status`, `date_from`, `date_to` (whole UTC days, inclusive), `group_by`
(model, owner, auth_type, day; comma-separated) and `format` (json or csv).
Repeat a filter or separate values with commas to give several. All times
are in seconds.
"""

import flask
import functions_framework

from shared import stats
from shared.auth import require_admin
from shared.db import transaction
from shared.http import json_api, require_root
from shared.logs import get_logger, log_event
from shared.settings import get_settings

get_settings()
logger = get_logger("functions.stats")


@functions_framework.http
@json_api
def stats_api(request: flask.Request):
    require_root(request, "GET")
    claims = require_admin(request)
    query = stats.parse_query(request.args)

    with transaction() as connection:
        columns, records = stats.run(connection, query)
    log_event(
        logger,
        "stats.served",
        admin_id=claims.subject,
        groups=len(records),
        output=query.output,
    )

    if query.output == "csv":
        response = flask.Response(
            stats.csv_lines(columns, records), mimetype="text/csv"
        )
        response.headers["Content-Disposition"] = (
            'attachment; filename="work-request-stats.csv"'
        )
        return response
    return flask.jsonify(
        filters=query.to_json(), unit="seconds", columns=columns, rows=records
    )
