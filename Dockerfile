# syntax=docker/dockerfile:1
# One image for every function. The FUNCTION environment variable names the
# folder under functions/, and the entrypoint starts functions-framework
# with that folder's target on port 8080, the port Knative sends requests
# to. The Knative Services in knative/services.yaml set FUNCTION. Building
# with --build-arg FUNCTION=<folder> bakes in a default instead.
#
# The migration Job and the admin CLI run from this image too, with
# `python -m shared.migrate` and `python -m shared.admin_cli`.

FROM python:3.11-slim AS requirements
WORKDIR /src
COPY pyproject.toml .
# Only [project].dependencies: the demo extras (RDKit, embedded PostgreSQL)
# and the dev tools stay out of the image.
RUN python -c 'import tomllib; project = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(project["dependencies"]))' > requirements.txt

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app
WORKDIR /app
COPY --from=requirements /src/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt

COPY shared/ shared/
COPY migrations/ migrations/
COPY functions/ functions/

# Function folder -> functions-framework target, one line per function.
COPY --chmod=0755 <<"SCRIPT" /usr/local/bin/run-function
#!/bin/sh
set -eu
case "${FUNCTION:-}" in
  auth) target=auth ;;
  submit) target=submit ;;
  requests) target=requests_api ;;
  scheduler) target=scheduler ;;
  instance_watch) target=instance_watch ;;
  jobs) target=jobs ;;
  stats) target=stats_api ;;
  filters) target=filters_api ;;
  admin_requests) target=admin_requests_api ;;
  admin_instances) target=admin_instances_api ;;
  cleanup) target=cleanup ;;
  reconcile) target=reconcile ;;
  dead_letters) target=dead_letters ;;
  *)
    echo "FUNCTION='${FUNCTION:-}' is not a function folder: set it to a folder name under functions/, such as auth" >&2
    exit 64
    ;;
esac
exec functions-framework --target "$target" --source "functions/$FUNCTION/main.py" --port 8080
SCRIPT

ARG FUNCTION=""
ENV FUNCTION=${FUNCTION}
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/run-function"]
