"""Label and field selectors as the Kubernetes API server parses them.

The fake API server in `tests.fake_kube` filters lists and watches with
these, so a test fails when the runtime sends a selector that a real API
server would read differently or reject. Label selectors support equality
(`a=b`, `a==b`, `a!=b`), sets (`a in (x,y)`, `a notin (x,y)`) and existence
(`a`, `!a`). Field selectors support `=`, `==` and `!=` on the fields that
the caller allows. Both reject what a real server rejects with 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any

LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
LABEL_PREFIX = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
SET_REQUIREMENT = re.compile(r"^(\S+)\s+(in|notin)\s*\((.*)\)$")
EQUALITY = re.compile(r"^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$")
# The field selector `source` of an Event compares source.component.
FIELD_ALIASES = {"source": "source.component"}

Requirement = Callable[[dict[str, str]], bool]


class SelectorError(ValueError):
    """A selector that a real API server rejects with 400 Bad Request."""


def _check_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    valid_prefix = not prefix or (
        len(prefix) <= 253 and LABEL_PREFIX.fullmatch(prefix) is not None
    )
    if not (valid_prefix and len(name) <= 63 and LABEL_NAME.fullmatch(name)):
        raise SelectorError(f"invalid label key {key!r}")
    return key


def _check_value(value: str) -> str:
    if value and not (len(value) <= 63 and LABEL_NAME.fullmatch(value)):
        raise SelectorError(f"invalid label value {value!r}")
    return value


def _split_requirements(text: str) -> list[str]:
    """Split on the commas that are not inside a set's parentheses."""
    parts: list[str] = []
    depth = 0
    current = ""
    for character in text:
        if character == "(":
            depth += 1
        elif character == ")":
            depth -= 1
        if character == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += character
    if depth != 0:
        raise SelectorError(f"unbalanced parentheses in selector {text!r}")
    parts.append(current)
    return [part.strip() for part in parts]


def _requirement(text: str) -> Requirement:
    if match := SET_REQUIREMENT.match(text):
        key = _check_key(match.group(1))
        values = {_check_value(v.strip()) for v in match.group(3).split(",")}
        if match.group(2) == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values

    if match := EQUALITY.match(text):
        key = _check_key(match.group(1))
        value = _check_value(match.group(3))
        if match.group(2) == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value

    if text.startswith("!"):
        key = _check_key(text[1:].strip())
        return lambda labels: key not in labels
    if text and " " not in text:
        key = _check_key(text)
        return lambda labels: key in labels
    raise SelectorError(f"unable to parse requirement {text!r}")


def parse_label_selector(text: str) -> list[Requirement]:
    """Return the requirements of a label selector. "" selects everything."""
    if not text.strip():
        return []
    return [_requirement(part) for part in _split_requirements(text)]


def match_labels(requirements: list[Requirement], labels: Any) -> bool:
    labels = labels if isinstance(labels, dict) else {}
    return all(requirement(labels) for requirement in requirements)


def parse_field_selector(
    text: str, allowed: Collection[str]
) -> list[tuple[str, bool, str]]:
    """Return (field path, equal, value) triples of a field selector."""
    if not text.strip():
        return []
    terms = []
    for part in text.split(","):
        match = EQUALITY.match(part.strip())
        if match is None:
            raise SelectorError(f"invalid field selector term {part!r}")
        path, operator, value = match.groups()
        if path not in allowed:
            raise SelectorError(f'field label not supported: "{path}"')
        terms.append((FIELD_ALIASES.get(path, path), operator != "!=", value))
    return terms


def _field(obj: Any, path: str) -> str:
    for key in path.split("."):
        obj = obj.get(key) if isinstance(obj, dict) else None
    return "" if obj is None else str(obj)


def match_fields(terms: list[tuple[str, bool, str]], obj: dict[str, Any]) -> bool:
    return all((_field(obj, path) == value) == equal for path, equal, value in terms)
