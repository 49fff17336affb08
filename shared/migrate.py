"""Apply the Alembic migrations to DATABASE_URL / DB_SCHEMA.

Run as `python -m shared.migrate` (upgrade to the newest revision) or
`python -m shared.migrate downgrade base`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config() -> Config:
    """Return an Alembic config that points at `migrations/`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(revision: str = "head") -> None:
    """Migrate the configured schema up to `revision`."""
    command.upgrade(alembic_config(), revision)


def downgrade(revision: str) -> None:
    """Migrate the configured schema down to `revision`."""
    command.downgrade(alembic_config(), revision)


def main(argv: list[str]) -> int:
    if not argv or argv == ["upgrade"]:
        upgrade()
    elif len(argv) == 2 and argv[0] in ("upgrade", "downgrade"):
        (upgrade if argv[0] == "upgrade" else downgrade)(argv[1])
    else:
        print("usage: python -m shared.migrate [upgrade|downgrade REVISION]")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
