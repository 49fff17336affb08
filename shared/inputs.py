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
HEADER_NAMES = {
    "smiles",
    "smi",
    "input",
    "inputs",
    "molecule",
    "canonical_smiles",
    "mol",
}
JSON_FIELDS = {"model_id", "inputs"}
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
    if not isinstance(value, str) or not MODEL_ID.fullmatch(value):
        raise ApiError(
            400,
            "invalid_model_id",
            f"model_id {value!r} is invalid: model ids are 1-40 lower-case letters, "
            "digits and dashes",
        )
    return value


def check_inputs(
    inputs: list[str],
    *,
    max_inputs: int,
    max_length: int,
    line_numbers: list[int] | None = None,
) -> list[str]:
    """Check count, length and characters of each input; return them stripped.

    Errors name the input by its CSV line number when `line_numbers` is
    given, otherwise by its 1-based position in the list.
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
        row = line_numbers[position] if line_numbers else position + 1
        where = f"line {row}" if line_numbers else f"input {row}"
        smiles = value.strip()
        if not smiles:
            raise ApiError(
                422,
                "empty_input",
                f"{where} is empty: remove it or fill it in",
                row=row,
            )
        if len(smiles) > max_length:
            raise ApiError(
                422,
                "input_too_long",
                f"{where} has {len(smiles)} characters, more than the limit of "
                f"{max_length} (MAX_INPUT_LENGTH); check that it is one SMILES "
                "or remove it",
                row=row,
            )
        if not SMILES_CHARACTERS.fullmatch(smiles):
            raise ApiError(
                422,
                "invalid_smiles",
                f"{where} ({_shown(smiles)}) contains characters that cannot "
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


def parse_csv_inputs(text: str, header: bool | None) -> tuple[list[str], list[int]]:
    """Read the SMILES column of CSV text; return the inputs and their lines.

    The SMILES column is the one whose header names it (smiles, input, ...),
    otherwise the first. Blank lines are skipped. With `header=None`, the
    first row is a header only when its first cell is such a name.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((reader.line_num, row))
    except csv.Error as error:
        raise ApiError(
            400,
            "invalid_csv",
            f"the CSV cannot be read at line {reader.line_num}: {error}; check "
            "the quotes on that line",
        ) from error
    if not rows:
        return [], []

    first = [cell.strip().lower() for cell in rows[0][1]]
    column = next((i for i, name in enumerate(first) if name in HEADER_NAMES), 0)
    has_header = header if header is not None else first[column] in HEADER_NAMES

    body = rows[1:] if has_header else rows
    inputs = [row[column] if column < len(row) else "" for _, row in body]
    return inputs, [line for line, _ in body]


def _single(values: list[str], name: str, where: str) -> str | None:
    if len(values) > 1:
        raise ApiError(
            400,
            "duplicate_parameter",
            f"{name} is given {len(values)} times in the {where}; give it once",
        )
    return values[0] if values else None


def _from_json(request: flask.Request) -> tuple[str, list[str], list[int] | None]:
    body = json_body(request)
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "invalid_body",
            'the JSON body must be an object: {"model_id": "...", "inputs": [...]}',
        )
    unknown = sorted(set(body) - JSON_FIELDS)
    if unknown:
        raise ApiError(
            400,
            "unknown_field",
            f"unknown field(s) {', '.join(map(repr, unknown))}; the body takes "
            "only model_id and inputs",
        )
    if "model_id" in request.args:
        raise ApiError(
            400,
            "duplicate_parameter",
            "model_id is given in both the query and the JSON body; give it once",
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
    return model_id, inputs, None


def _from_csv_body(request: flask.Request) -> tuple[str, list[str], list[int]]:
    model_id = _single(request.args.getlist("model_id"), "model_id", "query")
    if model_id is None:
        raise ApiError(
            400,
            "missing_model_id",
            "model_id is missing: with a CSV or text body, name the model in the "
            "query, e.g. POST /?model_id=demo-molweight",
        )
    model_id = check_model_id(model_id)
    header = _header_choice(_single(request.args.getlist("header"), "header", "query"))
    inputs, lines = parse_csv_inputs(_decode_text(request.get_data()), header)
    return model_id, inputs, lines


def _form_value(request: flask.Request, name: str) -> str | None:
    in_form = _single(request.form.getlist(name), name, "form")
    in_query = _single(request.args.getlist(name), name, "query")
    if in_form is not None and in_query is not None:
        raise ApiError(
            400,
            "duplicate_parameter",
            f"{name} is given in both the form and the query; give it once",
        )
    return in_form if in_form is not None else in_query


def _from_upload(request: flask.Request) -> tuple[str, list[str], list[int]]:
    if not request.mimetype_params.get("boundary"):
        raise ApiError(
            400,
            "invalid_multipart",
            "the multipart body has no boundary in its Content-Type; let your "
            "client build the form (curl -F model_id=... -F file=@molecules.csv)",
        )
    model_id = check_model_id(_form_value(request, "model_id"))
    uploads = request.files.getlist("file")
    if not uploads:
        raise ApiError(
            400,
            "missing_file",
            "the multipart form has no 'file' part: upload the CSV as 'file'",
        )
    if len(uploads) > 1:
        raise ApiError(
            400,
            "duplicate_parameter",
            f"the form has {len(uploads)} 'file' parts; send one file per request",
        )
    header = _header_choice(_form_value(request, "header"))
    inputs, lines = parse_csv_inputs(_decode_text(uploads[0].read()), header)
    return model_id, inputs, lines


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
    line_numbers: list[int] | None
    if mimetype == "application/json":
        model_id, raw_inputs, line_numbers = _from_json(request)
    elif mimetype in ("text/csv", "text/plain"):
        model_id, raw_inputs, line_numbers = _from_csv_body(request)
    elif mimetype == "multipart/form-data":
        model_id, raw_inputs, line_numbers = _from_upload(request)
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {mimetype or '(none)'} is not accepted: send "
            "application/json, text/csv, text/plain or multipart/form-data",
        )

    inputs = check_inputs(
        raw_inputs,
        max_inputs=max_inputs,
        max_length=max_length,
        line_numbers=line_numbers,
    )
    return Submission(model_id=model_id, inputs=inputs)
