"""Parse and check the molecules of a submitted work request.

A submission is a JSON object (`{"model_id": ..., "inputs": [...]}`), a CSV
or plain-text body with `?model_id=...`, or a multipart upload with a `file`
part and a `model_id` field. Every rejection is an ApiError that names the
row and value at fault. Chemistry is not checked here (that would load RDKit
into the submit function); the model reports unparseable molecules per row.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

import flask

from shared.http import ApiError, json_body

# Characters that can appear in a SMILES string (OpenSMILES, plus `*` for
# wildcard atoms). Whitespace never can: it ends a SMILES.
SMILES_CHARACTERS = re.compile(r"^[A-Za-z0-9@+\-\[\]()=#$%/\\.:*~]+$")
HEADER_NAMES = {"smiles", "input", "inputs", "molecule", "canonical_smiles", "mol"}
MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
SHOWN_VALUE_LENGTH = 40
# Room for JSON keys, CSV columns beside the SMILES and multipart framing.
BODY_OVERHEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Submission:
    """A checked submission: the model and its inputs, in order."""

    model_id: str
    inputs: list[str]


def _shown(value: str) -> str:
    if len(value) <= SHOWN_VALUE_LENGTH:
        return repr(value)
    return repr(value[:SHOWN_VALUE_LENGTH] + "...")


def check_model_id(value: object) -> str:
    if value is None or value == "":
        raise ApiError(
            400,
            "missing_model_id",
            "model_id is missing: name the model to run, e.g. "
            '{"model_id": "demo-molweight", "inputs": ["CCO"]}',
        )
    if not isinstance(value, str) or not MODEL_ID.match(value):
        raise ApiError(
            400,
            "invalid_model_id",
            f"model_id {value!r} is invalid: model ids are 1-40 lower-case letters, "
            "digits and dashes",
        )
    return value


def check_inputs(
    inputs: list[str], *, max_inputs: int, max_length: int, row_offset: int = 0
) -> list[str]:
    """Check count, length and characters of each input; return them stripped.

    `row_offset` converts list positions to the row numbers the user sees
    (1-based, counting a header line).
    """
    if not inputs:
        raise ApiError(
            422, "no_inputs", "the request holds no inputs: send at least one SMILES"
        )
    if len(inputs) > max_inputs:
        raise ApiError(
            413,
            "too_many_inputs",
            f"the request holds {len(inputs)} inputs but the limit is {max_inputs}; "
            "split it into several requests",
            count=len(inputs),
            limit=max_inputs,
        )

    checked = []
    for position, value in enumerate(inputs):
        row = position + 1 + row_offset
        smiles = value.strip()
        if not smiles:
            raise ApiError(
                422, "empty_input", f"input {row} is empty: remove it or fill it in"
            )
        if len(smiles) > max_length:
            raise ApiError(
                422,
                "input_too_long",
                f"input {row} has {len(smiles)} characters, more than the limit of "
                f"{max_length}",
                row=row,
            )
        if not SMILES_CHARACTERS.match(smiles):
            raise ApiError(
                422,
                "invalid_smiles",
                f"input {row} ({_shown(smiles)}) contains characters that cannot "
                "appear in SMILES (such as spaces or commas inside a value); "
                "send one SMILES per input",
                row=row,
            )
        checked.append(smiles)
    return checked


def _decode_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ApiError(
            400,
            "invalid_encoding",
            f"the input is not valid UTF-8 (byte {error.start}); save it as UTF-8",
        ) from error


def _header_choice(value: str | None) -> bool | None:
    if value is None or value.lower() in ("", "auto"):
        return None
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ApiError(
        400,
        "invalid_header_option",
        f"header={value!r} is invalid: use true, false or auto",
    )


def parse_csv_inputs(text: str, header: bool | None) -> tuple[list[str], int]:
    """Read the SMILES column of CSV text; return the inputs and rows skipped.

    The SMILES column is the one whose header names it (smiles, input, ...),
    otherwise the first. Blank lines are skipped. With `header=None`, the
    first row is a header only when its first cell is such a name.
    """
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    except csv.Error as error:
        raise ApiError(
            400, "invalid_csv", f"the CSV cannot be read: {error}"
        ) from error
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        return [], 0

    first = [cell.strip().lower() for cell in rows[0]]
    column = next((i for i, name in enumerate(first) if name in HEADER_NAMES), 0)
    has_header = header if header is not None else first[column] in HEADER_NAMES

    body = rows[1:] if has_header else rows
    inputs = [row[column] if column < len(row) else "" for row in body]
    return inputs, 1 if has_header else 0


def _from_json(request: flask.Request) -> tuple[str, list[str], int]:
    body = json_body(request)
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "invalid_body",
            'the JSON body must be an object: {"model_id": "...", "inputs": [...]}',
        )
    model_id = check_model_id(body.get("model_id"))
    inputs = body.get("inputs")
    if inputs is None:
        raise ApiError(
            400, "missing_inputs", "inputs is missing: send a list of SMILES strings"
        )
    if not isinstance(inputs, list):
        raise ApiError(
            422,
            "invalid_inputs",
            f"inputs must be a list of SMILES strings, not {type(inputs).__name__}",
        )
    for position, value in enumerate(inputs):
        if not isinstance(value, str):
            raise ApiError(
                422,
                "invalid_inputs",
                f"input {position + 1} is {type(value).__name__}, not a string: "
                "send SMILES as strings",
                row=position + 1,
            )
    return model_id, inputs, 0


def _from_csv_body(request: flask.Request) -> tuple[str, list[str], int]:
    model_id = check_model_id(request.args.get("model_id"))
    header = _header_choice(request.args.get("header"))
    inputs, skipped = parse_csv_inputs(_decode_text(request.get_data()), header)
    return model_id, inputs, skipped


def _from_upload(request: flask.Request) -> tuple[str, list[str], int]:
    model_id = check_model_id(
        request.form.get("model_id") or request.args.get("model_id")
    )
    upload = request.files.get("file")
    if upload is None:
        raise ApiError(
            400,
            "missing_file",
            "the multipart form has no 'file' part: upload the CSV as 'file'",
        )
    header = _header_choice(request.form.get("header") or request.args.get("header"))
    inputs, skipped = parse_csv_inputs(_decode_text(upload.read()), header)
    return model_id, inputs, skipped


def parse_submission(
    request: flask.Request, *, max_inputs: int, max_length: int
) -> Submission:
    """Read a submission in any accepted format and check its inputs."""
    limit = max_inputs * (max_length + 16) + BODY_OVERHEAD_BYTES
    # NOTE: a chunked body has no Content-Length and is read whole; the
    # Knative queue-proxy and the ingress bound its size in production.
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(
            413,
            "body_too_large",
            f"the body has {request.content_length} bytes, more than the "
            f"{limit} that {max_inputs} inputs can need; split the request",
        )

    mimetype = request.mimetype
    if mimetype == "application/json":
        model_id, raw_inputs, offset = _from_json(request)
    elif mimetype in ("text/csv", "text/plain"):
        model_id, raw_inputs, offset = _from_csv_body(request)
    elif mimetype == "multipart/form-data":
        model_id, raw_inputs, offset = _from_upload(request)
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {mimetype or '(none)'} is not accepted: send "
            "application/json, text/csv, text/plain or multipart/form-data",
        )

    inputs = check_inputs(
        raw_inputs, max_inputs=max_inputs, max_length=max_length, row_offset=offset
    )
    return Submission(model_id=model_id, inputs=inputs)
