"""Run the reconciler now (ADMIN): `POST /` returns what it changed.

A Kubernetes CronJob runs the same pass on its schedule
(`python -m shared.cron reconcile`); this function lets an administrator
run it at once. A runtime fault returns 503.
"""

import flask
import functions_framework

from shared import cron
from shared.auth import require_admin
from shared.http import ApiError, json_api, require_root
from shared.runtime.base import RuntimeUnavailable
from shared.settings import get_settings

get_settings()


@functions_framework.http
@json_api
def reconcile(request: flask.Request):
    require_root(request, "POST")
    require_admin(request)
    try:
        return flask.jsonify(cron.run("reconcile"))
    except RuntimeUnavailable as error:
        raise ApiError(
            503, "runtime_unavailable", f"{error}; run the reconciler again later"
        ) from error
