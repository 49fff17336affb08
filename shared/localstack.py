"""The local stack: every function, the Broker and the pod API on 127.0.0.1.

On Knative each function is a Service, a Broker routes CloudEvents to them
by Trigger filters, and ApiServerSource reports model pods. `LocalStack`
reproduces that on one machine so the same function code runs unchanged:
it starts the local Broker (routing by knative/*.yaml), the local pod
server (sending pod events to the Broker), and each function as its own
functions-framework process.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.broker import LocalBroker
from shared.localcron import LocalCron
from shared.logs import get_logger, log_event
from shared.loopback import LOOPBACK, free_ports
from shared.routing import Route
from shared.runtime.local import CommandFactory, LocalPodServer, demo_commands

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_START_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 5.0
LOG_TAIL_LINES = 30

# functions-framework 3.10.2 serves through gunicorn with WORKERS (default 1)
# worker processes of THREADS threads each (gthread). Its default THREADS is
# 4 per CPU. A fixed 4 gives every machine the same, smaller thread count.
FUNCTION_THREADS = 4

logger = get_logger(__name__)


class LocalStackError(RuntimeError):
    """A part of the local stack failed to start."""


@dataclass(frozen=True)
class FunctionSpec:
    """One function: its Knative Service name, folder and Python target."""

    service: str
    folder: str
    target: str

    @property
    def source(self) -> str:
        return f"functions/{self.folder}/main.py"


FUNCTIONS = (
    FunctionSpec(service="auth", folder="auth", target="auth"),
    FunctionSpec(service="submit", folder="submit", target="submit"),
    FunctionSpec(service="requests", folder="requests", target="requests_api"),
    FunctionSpec(service="scheduler", folder="scheduler", target="scheduler"),
    FunctionSpec(
        service="instance-watch", folder="instance_watch", target="instance_watch"
    ),
    FunctionSpec(service="jobs", folder="jobs", target="jobs"),
    FunctionSpec(service="stats", folder="stats", target="stats_api"),
    FunctionSpec(service="filters", folder="filters", target="filters_api"),
    FunctionSpec(
        service="admin-requests", folder="admin_requests", target="admin_requests_api"
    ),
    FunctionSpec(
        service="admin-instances",
        folder="admin_instances",
        target="admin_instances_api",
    ),
    FunctionSpec(service="cleanup", folder="cleanup", target="cleanup"),
    FunctionSpec(service="reconcile", folder="reconcile", target="reconcile"),
    FunctionSpec(service="dead-letters", folder="dead_letters", target="dead_letters"),
)


@dataclass
class _FunctionProcess:
    spec: FunctionSpec
    url: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]


class LocalStack:
    """Start the Broker, the pod server and the functions; stop them all.

    `env` is the whole environment of the function processes (pass
    dict(os.environ) plus DATABASE_URL, DB_SCHEMA, HUB_SECRET_KEY, ...).
    The stack adds K_SINK, LOCAL_RUNTIME_URL, JOBS_URL, RUNTIME=local,
    PYTHONPATH and THREADS. Logs go to `log_dir` (default: a new temporary
    folder): one file per function, and pods/ for model instances.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        log_dir: Path | None = None,
        functions: Sequence[FunctionSpec] = FUNCTIONS,
        repo_root: Path = REPO_ROOT,
        routes: Sequence[Route] | None = None,
        command_factory: CommandFactory = demo_commands,
        start_timeout: float = DEFAULT_START_TIMEOUT_SECONDS,
        cron_intervals: dict[str, float] | None = None,
    ):
        self.env = dict(env)
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="modelhub-stack-"))
        self.functions = tuple(functions)
        self.repo_root = repo_root
        self.start_timeout = start_timeout
        self._routes = routes
        self._command_factory = command_factory

        self.urls: dict[str, str] = {}
        self.broker: LocalBroker | None = None
        self.pods: LocalPodServer | None = None
        self.cron: LocalCron | None = None
        self._cron_intervals = cron_intervals
        self._processes: list[_FunctionProcess] = []

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def log_paths(self) -> dict[str, Path]:
        """Return the log file of each function, by Service name."""
        return {p.spec.service: p.log_path for p in self._processes}

    def start(self) -> LocalStack:
        """Start everything, or stop what started and raise LocalStackError."""
        started = time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ports = dict(
            zip(
                [spec.service for spec in self.functions],
                free_ports(len(self.functions)),
                strict=True,
            )
        )
        self.urls = {
            service: f"http://{LOOPBACK}:{port}" for service, port in ports.items()
        }

        try:
            self.broker = LocalBroker(self.urls, self._routes).start()
            self.pods = LocalPodServer(
                self.broker.url,
                command_factory=self._command_factory,
                log_dir=self.log_dir / "pods",
            ).start()
            env = self._function_env()
            for spec in self.functions:
                self._start_function(spec, ports[spec.service], env)
            self._wait_until_listening()
            self.cron = LocalCron(
                env, self.log_dir / "cron.log", self.repo_root, self._cron_intervals
            ).start()
        except BaseException:
            self.stop()
            raise

        log_event(
            logger,
            "localstack.started",
            seconds=round(time.monotonic() - started, 2),
            broker=self.broker.url,
            pods=self.pods.url,
            log_dir=str(self.log_dir),
            functions=self.urls,
        )
        return self

    def stop(self) -> None:
        """Stop the pod server, then the Broker, then the functions.

        Model instances go first so their last events can still reach the
        functions; the Broker then gets a short drain.
        """
        if self.cron is not None:
            self.cron.stop()
            self.cron = None
        if self.pods is not None:
            self.pods.stop()
            self.pods = None
        if self.broker is not None:
            self.broker.stop(timeout=2.0)
            self.broker = None

        for function in self._processes:
            _signal_group(function.process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for function in self._processes:
            _wait_or_kill(function, deadline)
        if self._processes:
            log_event(logger, "localstack.stopped", functions=len(self._processes))
        self._processes = []

    def _function_env(self) -> dict[str, str]:
        assert self.broker is not None and self.pods is not None
        env = dict(self.env)
        existing = env.get("PYTHONPATH")
        root = str(self.repo_root)
        env.update(
            {
                "K_SINK": self.broker.url,
                "LOCAL_RUNTIME_URL": self.pods.url,
                "RUNTIME": "local",
                "PYTHONPATH": f"{root}{os.pathsep}{existing}" if existing else root,
                "THREADS": str(FUNCTION_THREADS),
            }
        )
        if "jobs" in self.urls:
            env["JOBS_URL"] = self.urls["jobs"]
        return env

    def _start_function(
        self, spec: FunctionSpec, port: int, env: dict[str, str]
    ) -> None:
        source = self.repo_root / spec.source
        if not source.is_file():
            raise LocalStackError(
                f"function {spec.service!r} has no source file {source}: "
                "check the folder name in FunctionSpec"
            )

        argv = [
            sys.executable,
            "-m",
            "functions_framework",
            "--target",
            spec.target,
            "--source",
            spec.source,
            "--host",
            LOOPBACK,
            "--port",
            str(port),
        ]
        log_path = self.log_dir / f"{spec.service}.log"
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                argv,
                cwd=self.repo_root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._processes.append(
            _FunctionProcess(spec, self.urls[spec.service], port, log_path, process)
        )

    def _wait_until_listening(self) -> None:
        waiting = list(self._processes)
        deadline = time.monotonic() + self.start_timeout
        while waiting:
            for function in list(waiting):
                returncode = function.process.poll()
                if returncode is not None:
                    raise LocalStackError(
                        f"function {function.spec.service!r} exited with code "
                        f"{returncode} during start. Last lines of "
                        f"{function.log_path}:\n{_tail(function.log_path)}"
                    )
                if _accepts_connections(function.port):
                    waiting.remove(function)

            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(f.spec.service for f in waiting)
                raise LocalStackError(
                    f"functions {names} did not accept connections within "
                    f"{self.start_timeout} s: see their logs in {self.log_dir}"
                )
            time.sleep(0.1)


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    # Each function runs in its own session: gunicorn's arbiter and worker
    # get the signal together.
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        return


def _wait_or_kill(function: _FunctionProcess, deadline: float) -> None:
    try:
        function.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        return
    except subprocess.TimeoutExpired:
        pass

    log_event(
        logger,
        "localstack.function_killed",
        level=logging.WARNING,
        service=function.spec.service,
        pid=function.process.pid,
    )
    _signal_group(function.process, signal.SIGKILL)
    try:
        function.process.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        log_event(
            logger,
            "localstack.kill_timed_out",
            level=logging.ERROR,
            service=function.spec.service,
            pid=function.process.pid,
        )


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return f"(cannot read the log: {error})"
    return "\n".join(text.splitlines()[-lines:])
