"""Results of a completed work request, as JSON or CSV.

The jobs function stores a result as `{"columns": [...], "rows": [...]}`:
one row (an object, or null when the model returned nothing for that
input) per input, in input order, and the column names in the order the
model first returned them. PostgreSQL's jsonb does not keep key order, so
the column list does.

In CSV, numbers stay numbers, booleans are `true`/`false`, a null is an
empty cell, and text that a spreadsheet would run as a formula (starting
with = + - @ or a tab or carriage return) gets a leading apostrophe.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from typing import Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
INPUT_COLUMN = "input"
# A model column named like the hub's input column is renamed to this.
RENAMED_INPUT_COLUMN = "model_input"
MAX_DEPTH = 32


class UnstorableValue(ValueError):
    """A value nested deeper than MAX_DEPTH, which jsonb is not meant for."""


def clean_json(value: Any, depth: int = 0) -> Any:
    """Return `value` in a form PostgreSQL's jsonb accepts.

    NaN and infinities become null (jsonb has no such numbers, and models
    use NaN for "no value"). NUL characters are removed and lone surrogates
    replaced by U+FFFD, because jsonb text must be valid UTF-8 without NUL.
    Raises UnstorableValue past MAX_DEPTH levels of nesting.
    """
    if depth > MAX_DEPTH:
        raise UnstorableValue(f"values nest deeper than {MAX_DEPTH} levels")
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(item, depth + 1) for item in value]
    return value


def clean_text(text: str) -> str:
    text = text.replace("\x00", "")
    # A UTF-16 round trip turns each lone surrogate into U+FFFD.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def columns_of(rows: list[Any]) -> list[str]:
    """Return the keys of all row objects, in order of first appearance."""
    columns: dict[str, None] = {}
    for row in rows:
        if isinstance(row, dict):
            columns.update(dict.fromkeys(row))
    return list(columns)


def _rename_input_column(row: Any) -> Any:
    if not isinstance(row, dict) or INPUT_COLUMN not in row:
        return row
    renamed = {}
    for key, value in row.items():
        renamed[RENAMED_INPUT_COLUMN if key == INPUT_COLUMN else key] = value
    return renamed


def pack_result(rows: list[Any]) -> dict[str, Any]:
    """Build the stored form of a model's rows.

    A model column called `input` (many Ersilia models echo their input) is
    stored as `model_input`, so it cannot hide the submitted SMILES.
    Raises UnstorableValue for values nested too deeply.
    """
    cleaned = [_rename_input_column(clean_json(row, 1)) for row in rows]
    return {"columns": columns_of(cleaned), "rows": cleaned}


def json_rows(inputs: list[str], result: dict[str, Any]) -> list[dict[str, Any]]:
    """Return one object per input: the input, then the model's values."""
    rows = []
    for smiles, values in zip(inputs, result["rows"], strict=True):
        row: dict[str, Any] = {"input": smiles}
        for column in result["columns"]:
            row[column] = values.get(column) if isinstance(values, dict) else None
        rows.append(row)
    return rows


def csv_cell(value: Any) -> str:
    """Render one value as CSV cell text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, dict | list):
        value = json.dumps(value, separators=(",", ":"))
    text = str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def csv_lines(inputs: list[str], result: dict[str, Any]) -> Iterator[str]:
    """Yield the CSV text line by line (header first), quoted as needed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    columns = ["input", *result["columns"]]

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow([csv_cell(column) for column in columns])
    yield flush()
    for row in json_rows(inputs, result):
        writer.writerow([csv_cell(row[column]) for column in columns])
        yield flush()
