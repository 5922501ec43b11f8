"""Checks for JSON configuration files: a schema maps a dotted field to (check, what it must be), and the
first field that fails is said in words, so a damaged file is one clear line."""

from __future__ import annotations

import json


def whole(low, high):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def real(low, high):
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= high


def instance_of(kind):
    return lambda v: isinstance(v, kind)


def schema_problem(data: dict, schema: dict):
    """The first field of `data` that is missing or fails its check in `schema`, in words, or None."""
    for field, (check, must_be) in schema.items():
        value = data
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return f"{field} is missing"
        if not check(value):
            return f"{field} is {json.dumps(value)[:40]}, it must be {must_be}"
    return None
