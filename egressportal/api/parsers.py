"""Request parsing that turns every malformed body into a 400, never a 500."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

__all__ = ["ApiJSONParser", "find_unstorable_text"]


class ApiJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("The JSON body is nested too deeply.") from None


def _bad_text(value: str) -> str | None:
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text"
    return None


def find_unstorable_text(data: Any, path: str = "", depth: int = 0) -> tuple[str, str] | None:
    """The first string (key or value) in ``data`` that no database column can
    hold (NUL, lone surrogates), as (field path, problem); None when all is well."""
    if depth > 50:
        return path or "non_field_errors", "is nested too deeply"
    if isinstance(data, str):
        problem = _bad_text(data)
        return (path or "non_field_errors", problem) if problem else None
    if isinstance(data, Mapping):
        items = data.lists() if hasattr(data, "lists") else data.items()
        for key, value in items:
            key_text = str(key)
            problem = _bad_text(key_text)
            if problem:
                return "non_field_errors", f"a field name {problem}"
            found = find_unstorable_text(value, f"{path}.{key_text}" if path else key_text, depth + 1)
            if found:
                return found
    elif isinstance(data, (list, tuple)):
        for item in data:
            found = find_unstorable_text(item, path, depth + 1)
            if found:
                return found
    return None
