"""The models the hub can run, and their settings.

A model is enabled or disabled, runs `sync` (`POST /run`) or `async`
(`/job/submit`), and caps its live instances with `max_instances` (NULL
means no per-model cap).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection

from shared.tables import model

DEFAULT_REGISTRY = "ersiliaos"


@dataclass(frozen=True)
class Model:
    """One row of the model table."""

    id: str
    enabled: bool
    execution_mode: str
    max_instances: int | None
    image: str
    image_tag: str
    description: str
    timeout_seconds: int
    cpu_request_millicores: int
    cpu_limit_millicores: int
    memory_request_mib: int
    memory_limit_mib: int

    @property
    def image_reference(self) -> str:
        """Return the image with its tag, e.g. `ersiliaos/eos4e40:v1`."""
        return f"{self.image}:{self.image_tag}"


def _from_row(row: sa.Row) -> Model:
    values = row._mapping
    return Model(**{name: values[name] for name in Model.__dataclass_fields__})


def get_model(
    connection: Connection, model_id: str, *, lock: bool = False
) -> Model | None:
    """Return the model or None. `lock` takes a row lock until commit."""
    query = sa.select(model).where(model.c.id == model_id)
    if lock:
        query = query.with_for_update()
    row = connection.execute(query).first()
    return None if row is None else _from_row(row)


def list_models(connection: Connection, *, enabled_only: bool = True) -> list[Model]:
    query = sa.select(model).order_by(model.c.id)
    if enabled_only:
        query = query.where(model.c.enabled)
    return [_from_row(row) for row in connection.execute(query)]


def upsert_model(
    connection: Connection,
    model_id: str,
    *,
    execution_mode: str,
    description: str = "",
    enabled: bool = True,
    max_instances: int | None = None,
    image: str | None = None,
    image_tag: str = "latest",
    timeout_seconds: int = 3600,
) -> None:
    """Create the model or update its settings."""
    values = {
        "id": model_id,
        "enabled": enabled,
        "execution_mode": execution_mode,
        "max_instances": max_instances,
        "image": image or f"{DEFAULT_REGISTRY}/{model_id}",
        "image_tag": image_tag,
        "description": description,
        "timeout_seconds": timeout_seconds,
    }
    statement = insert(model).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[model.c.id],
        set_={**values, "last_updated": sa.func.now()},
    )
    connection.execute(statement)
