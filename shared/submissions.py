"""Accept a work request: check it, store it, announce it.

Nothing is stored for a rejected submission: all checks run before the one
transaction that writes the request and its inputs. The
`workrequest.submitted` event goes out after the commit.
"""

from __future__ import annotations

from typing import Any

import flask

from shared import catalog, workrequests
from shared.auth import Owner
from shared.db import transaction
from shared.events import WORK_REQUEST_SUBMITTED, EventDeliveryError, emit
from shared.http import ApiError
from shared.inputs import parse_submission
from shared.logs import get_logger, log_event
from shared.settings import Settings

logger = get_logger(__name__)


def enabled_models() -> list[dict[str, Any]]:
    """Return the models that accept work requests."""
    with transaction() as connection:
        models = catalog.list_models(connection)
    return [
        {
            "id": model.id,
            "description": model.description,
            "execution_mode": model.execution_mode,
        }
        for model in models
    ]


def _check_model(model: catalog.Model | None, model_id: str) -> None:
    if model is None:
        raise ApiError(
            404,
            "model_not_found",
            f"model {model_id!r} does not exist; GET /models lists the models "
            "you can use",
        )
    if not model.enabled:
        raise ApiError(
            409,
            "model_disabled",
            f"model {model_id!r} is disabled and takes no requests; choose "
            "another model from GET /models",
        )


def submit(
    request: flask.Request, owner: Owner, settings: Settings
) -> workrequests.WorkRequest:
    """Store the submission as a REQUESTED work request and announce it."""
    submission = parse_submission(
        request,
        max_inputs=settings.max_inputs,
        max_length=settings.max_input_length,
    )

    with transaction() as connection:
        model = catalog.get_model(connection, submission.model_id)
        _check_model(model, submission.model_id)
        created = workrequests.create(
            connection, owner, submission.model_id, submission.inputs
        )

    log_event(
        logger,
        "workrequest.submitted",
        request_id=created.id,
        model_id=created.model_id,
        inputs=created.input_size,
        auth_type=owner.auth_type,
    )
    try:
        emit(
            WORK_REQUEST_SUBMITTED,
            {"request_id": created.id, "model_id": created.model_id},
            subject=created.id,
            event_id=f"{created.id}.submitted",
        )
    except EventDeliveryError as error:
        # The request stays REQUESTED until another event for its model, or
        # the reconciler, runs a scheduling pass.
        log_event(
            logger,
            "workrequest.event_lost",
            level=40,
            request_id=created.id,
            model_id=created.model_id,
            error=str(error),
        )
    return created
