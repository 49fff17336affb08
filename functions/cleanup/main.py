"""Run the age-based cleanup now (ADMIN): `POST /` returns the report.

A Kubernetes CronJob runs the same job on its schedule
(`python -m shared.cron cleanup`); this function lets an administrator
run it at once.
"""

import flask
import functions_framework

from shared import cron
from shared.auth import require_admin
from shared.http import json_api, require_root
from shared.settings import get_settings

get_settings()


@functions_framework.http
@json_api
def cleanup(request: flask.Request):
    require_root(request, "POST")
    require_admin(request)
    return flask.jsonify(cron.run("cleanup"))
