"""Run work requests end to end on the demo models: `task demo`.

It uses DATABASE_URL or starts an embedded PostgreSQL, migrates, and
registers the demo models. It then starts the local stack (every
function, the broker, the local runtime), opens an anonymous session and
submits the drug file to every demo model over HTTP. While waiting it
shows progress, then prints a table with a row per request and writes
each result CSV. Exits 0 only when every request is COMPLETED with one
row per input.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import secrets
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
DRUGS = Path(__file__).resolve().parent / "drugs.csv"
TERMINAL = ("COMPLETED", "FAILED")
HTTP_TIMEOUT_SECONDS = 30


@dataclass
class Tracked:
    """One submitted request and what the demo saw of it."""

    model_id: str
    request_id: str
    input_size: int
    body: dict[str, Any] | None = None
    rows: int | None = None
    csv_path: Path | None = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--input", type=Path, default=DRUGS, help="CSV of SMILES to submit"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "demo-output",
        help="folder for the result CSVs",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds to wait for all requests to finish",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=ROOT / ".demo",
        help="folder for the embedded database and the function logs",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="keep the local stack running after the demo, until Ctrl-C",
    )
    return parser.parse_args(argv)


def prepare_environment(data_dir: Path) -> object | None:
    """Fill in DATABASE_URL (embedded server if unset) and the other settings.

    Returns the embedded server handle, or None when DATABASE_URL was given.
    """
    server = None
    if not os.environ.get("DATABASE_URL"):
        from shared import embedded_pg

        started = time.monotonic()
        url, server = embedded_pg.start(data_dir / "pgdata")
        os.environ["DATABASE_URL"] = url
        print(
            f"Started embedded PostgreSQL in {data_dir / 'pgdata'} "
            f"({time.monotonic() - started:.1f} s)"
        )
    os.environ.setdefault("DB_SCHEMA", "modelhub_demo")
    if not os.environ.get("HUB_SECRET_KEY"):
        os.environ["HUB_SECRET_KEY"] = demo_secret_key(data_dir / "secret_key")
    os.environ.setdefault("LOG_FORMAT", "json")
    return server


def demo_secret_key(path: Path) -> str:
    """Return the demo's signing key, made once and kept in `path`.

    Keeping it means tokens from an earlier run still work against the
    requests kept in the embedded database.
    """
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(key, encoding="utf-8")
    return key


def register_models() -> list[str]:
    """Create or update the demo models; return their ids."""
    from shared import catalog
    from shared.db import transaction
    from shared.demo.models import DEMO_MODELS

    with transaction() as connection:
        for model in DEMO_MODELS.values():
            catalog.upsert_model(
                connection,
                model.id,
                execution_mode=model.execution_mode,
                description=model.description,
                max_instances=2,
                timeout_seconds=300,
            )
    return sorted(DEMO_MODELS)


def count_inputs(path: Path) -> int:
    from shared.inputs import parse_csv_inputs

    inputs, _ = parse_csv_inputs(path.read_text(encoding="utf-8-sig"), None)
    return len(inputs)


def submit_all(urls: dict[str, str], token: str, models: list[str], path: Path):
    headers = {"Authorization": f"Bearer {token}"}
    tracked = []
    for model_id in models:
        with path.open("rb") as upload:
            response = requests.post(
                urls["submit"] + "/",
                headers=headers,
                data={"model_id": model_id},
                files={"file": (path.name, upload, "text/csv")},
                timeout=HTTP_TIMEOUT_SECONDS,
            )
        if response.status_code != 201:
            raise SystemExit(
                f"submit for {model_id} failed: {response.status_code} {response.text}"
            )
        body = response.json()
        tracked.append(Tracked(model_id, body["id"], body["input_size"]))
        print(f"Submitted {body['input_size']} molecules to {model_id}: {body['id']}")
    return tracked


def wait_for_all(
    urls: dict[str, str], token: str, tracked: list[Tracked], timeout: float
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    last_line = ""
    while time.monotonic() < deadline:
        for item in tracked:
            response = requests.get(
                f"{urls['requests']}/{item.request_id}",
                headers=headers,
                timeout=HTTP_TIMEOUT_SECONDS,
            )
            response.raise_for_status()
            item.body = response.json()

        line = "  ".join(
            f"{item.model_id}: {item.body['status'] if item.body else '?'}"
            for item in tracked
        )
        if line != last_line:
            print(f"[{time.monotonic() - started:6.1f} s] {line}", flush=True)
            last_line = line
        if all(item.body and item.body["status"] in TERMINAL for item in tracked):
            return
        time.sleep(0.5)
    print(f"Gave up waiting after {timeout:.0f} s", file=sys.stderr)


def fetch_results(urls, token: str, tracked: list[Tracked], output: Path) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    output.mkdir(parents=True, exist_ok=True)
    for item in tracked:
        if not item.body or item.body["status"] != "COMPLETED":
            continue
        response = requests.get(
            f"{urls['requests']}/{item.request_id}/results",
            params={"format": "csv"},
            headers=headers,
            timeout=HTTP_TIMEOUT_SECONDS,
        )
        response.raise_for_status()
        item.csv_path = output / f"{item.model_id}.csv"
        item.csv_path.write_text(response.text, encoding="utf-8")
        item.rows = len(list(csv.reader(io.StringIO(response.text)))) - 1


def _seconds(start: str | None, end: str | None) -> str:
    if not start or not end:
        return "-"
    delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return f"{delta.total_seconds():.2f}"


def print_table(tracked: list[Tracked]) -> None:
    header = (
        f"{'model':18} {'status':10} {'rows':>5} {'queue s':>8} "
        f"{'pod ready s':>11} {'model s':>8} {'total s':>8}"
    )
    print()
    print(header)
    print("-" * len(header))
    for item in tracked:
        body = item.body or {}
        requested = body.get("request_timestamp")
        job_start = body.get("job_submitted_timestamp")
        finished = body.get("processed_timestamp")
        rows = item.rows if item.rows is not None else "-"
        print(
            f"{item.model_id:18} {body.get('status', '?'):10} {rows:>5} "
            f"{_seconds(requested, job_start):>8} "
            f"{_seconds(requested, body.get('pod_ready_timestamp')):>11} "
            f"{_seconds(job_start, finished):>8} "
            f"{_seconds(requested, finished):>8}"
        )
        if body.get("status") == "FAILED":
            print(f"  reason: {body.get('status_reason')}")
    print()
    print(
        "queue = request to job start, pod ready = request to model healthy, "
        "model = job start to result, total = request to result"
    )


def succeeded(tracked: list[Tracked]) -> bool:
    return all(
        item.body
        and item.body["status"] == "COMPLETED"
        and item.rows == item.input_size
        for item in tracked
    )


def print_urls(urls: dict[str, str]) -> None:
    """Print the function URLs as shell variables for curl."""
    for service, url in urls.items():
        print(f"  export {service.upper().replace('-', '_')}={url}")


def serve_until_interrupted(urls: dict[str, str]) -> None:
    print("\nThe local stack keeps running; the URLs are:")
    print_urls(urls)
    print("Press Ctrl-C to stop it.", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("Stopping the local stack")


def quiet_logs() -> None:
    """Keep the demo's terminal to progress lines; function logs go to files."""
    from shared.logs import configure_logging

    configure_logging()
    logging.getLogger().setLevel(logging.WARNING)


def wait_for_instances_gone(stack, timeout: float = 20.0) -> None:
    """Let the last instances finish being deleted before the stack stops."""
    deadline = time.monotonic() + timeout
    while stack.pods is not None and stack.pods.list() and time.monotonic() < deadline:
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wall_start = time.monotonic()
    quiet_logs()
    server = prepare_environment(args.data_dir)

    from shared import migrate
    from shared.localstack import LocalStack

    migrate.upgrade()
    models = register_models()
    print(f"Input: {args.input} ({count_inputs(args.input)} molecules)")

    stack_start = time.monotonic()
    with LocalStack(env=dict(os.environ), log_dir=args.data_dir / "logs") as stack:
        print(f"Local stack up in {time.monotonic() - stack_start:.1f} s")
        print_urls(stack.urls)
        session = requests.post(
            stack.urls["auth"] + "/anonymous", timeout=HTTP_TIMEOUT_SECONDS
        )
        session.raise_for_status()
        token = session.json()["access_token"]

        tracked = submit_all(stack.urls, token, models, args.input)
        wait_for_all(stack.urls, token, tracked, args.timeout)
        fetch_results(stack.urls, token, tracked, args.output)
        wait_for_instances_gone(stack)
        print_table(tracked)
        wall_seconds = time.monotonic() - wall_start
        if args.serve:
            serve_until_interrupted(stack.urls)

    for item in tracked:
        if item.csv_path:
            print(f"Wrote {item.csv_path}")
    print(f"Wall time: {wall_seconds:.1f} s")
    del server

    if succeeded(tracked):
        print("All requests COMPLETED with one row per input.")
        return 0
    print("Some requests did not complete with one row per input.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
