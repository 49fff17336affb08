"""The values the stats filters accept (ADMIN only).

`GET /` returns every model, the auth types, the statuses, the group-by
options, and the user ids and anonymous session ids that own requests,
each list paged (`limit`, `user_after`, `session_after`). The lists are
not narrowed by other filters.
"""

import flask
import functions_framework

from shared import stats_filters
from shared.auth import require_admin
from shared.db import transaction
from shared.http import json_api, require_root
from shared.settings import get_settings

get_settings()


@functions_framework.http
@json_api
def filters_api(request: flask.Request):
    require_root(request, "GET")
    require_admin(request)
    paging = stats_filters.parse_paging(request.args)

    with transaction() as connection:
        return flask.jsonify(stats_filters.load(connection, paging))
