"""JSON Schema (draft 2020-12) for ``e.json`` and ``<Name>.json``, generated from the rules.

Nothing here restates a rule: every type, length, pattern, constant, placeholder and
description comes from the :class:`~qywx_cli.core.config.FieldRule` tables that
``qywx validate`` applies, so an editor and the CLI cannot disagree about what a field
may hold. Titles are the element doc's own field names (qywx-proxy-login.md, 元素配置),
so editors show them on hover.

Choices where a schema has to say more, or less, than ``validate``:

* **Unknown keys** are ``additionalProperties: false``. ``validate`` only warns about
  them, because the platform ignores keys it does not know; but a schema has no
  "warning" level, and its whole use in an editor is to underline ``suiteid`` while it
  is being typed. ``qywx validate --strict`` is the CLI mode that agrees with it.
* **Secrets** (suiteSecret, encodingAESKey, token) are ``anyOf``: a literal that obeys
  the rule, or an ``env:VAR`` reference, which only ``validate`` can resolve. A literal
  may not start with ``env:``, so a malformed reference is not mistaken for a literal.
* **Blank strings**: string rules without a pattern get ``pattern: "\\S"``, the schema
  form of ``validate``'s ``empty-field`` check (every rule's own pattern already
  refuses blanks).
* ``$schema`` is allowed at the top level, as a string, so files written by
  ``qywx init`` validate in both.

What only ``validate`` can check: JSON syntax and strict UTF-8 (the schema sees parsed
data), the file layout (folder name, ``<Name>.json`` named after it), env:VAR resolution,
and the rules across instances (suite-conflict, ambiguous-corp).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from qywx_cli.core.config import (
    BUSINESS_FIELDS,
    E_JSON_FIELDS,
    ELEMENT_TYPE,
    ENV_PREFIX,
    ENV_REFERENCE_PATTERN,
    META_KEYS,
    FieldRule,
)
from qywx_cli.core.errors import UsageError
from qywx_cli.core.scaffold import SCHEMA_URLS

__all__ = ["DIALECT", "SchemaName", "schema_for"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"

SchemaName = Literal["e", "business"]

_DOCUMENTS: dict[SchemaName, tuple[str, str, tuple[FieldRule, ...]]] = {
    "e": (
        "e.json — 元素配置文件",
        f"Element file of one {ELEMENT_TYPE} login instance: auths/<Name>/e.json.",
        E_JSON_FIELDS,
    ),
    "business": (
        "<Name>.json — 业务配置文件",
        f"Business file of one {ELEMENT_TYPE} login instance: auths/<Name>/<Name>.json, "
        "named after its folder.",
        BUSINESS_FIELDS,
    ),
}


def _describe(rule: FieldRule) -> str:
    return f"{rule.description} Rule: {rule.name} {rule.hint}." if rule.hint else rule.description


def _string(rule: FieldRule) -> dict[str, Any]:
    """The literal form of a string field: type, const, lengths, pattern, no placeholder."""
    out: dict[str, Any] = {"type": "string"}
    if rule.const is not None:
        out["const"] = rule.const
        return out
    if rule.min_length is not None:
        out["minLength"] = rule.min_length
    if rule.max_length is not None:
        out["maxLength"] = rule.max_length
    out["pattern"] = rule.pattern or r"\S"
    refused: list[dict[str, Any]] = []
    if rule.secret:
        refused.append({"pattern": f"^{ENV_PREFIX}"})
    if rule.placeholder is not None:
        refused.append({"const": rule.placeholder})
    if len(refused) == 1:
        out["not"] = refused[0]
    elif refused:
        out["not"] = {"anyOf": refused}
    return out


def _property(rule: FieldRule) -> dict[str, Any]:
    head: dict[str, Any] = {"title": rule.title, "description": _describe(rule)}
    if rule.default is not None:
        head["default"] = rule.default
    if rule.json_type == "object":
        return {**head, **_object(rule.fields)}
    if rule.json_type == "boolean":
        return {**head, "type": "boolean"}
    if not rule.secret:
        return {**head, **_string(rule)}
    reference = {
        "type": "string",
        "pattern": ENV_REFERENCE_PATTERN,
        "description": "env:VAR — read the value from environment variable VAR",
    }
    return {**head, "anyOf": [_string(rule), reference]}


def _object(rules: Sequence[FieldRule], *, top_level: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    if top_level:
        for key in sorted(META_KEYS):
            properties[key] = {
                "type": "string",
                "description": "The JSON Schema this file follows (written by qywx init).",
            }
    for rule in rules:
        properties[rule.name] = _property(rule)
    return {
        "type": "object",
        "properties": properties,
        "required": [r.name for r in rules if r.required],
        "additionalProperties": False,
    }


def schema_for(which: SchemaName, rules: Sequence[FieldRule] | None = None) -> dict[str, Any]:
    """The schema for ``e.json`` (``"e"``) or the business file (``"business"``).

    ``rules`` replaces the document's rule table (tests pass a modified copy to show
    the schema follows the rules rather than repeating them).
    """
    if which not in _DOCUMENTS:
        raise UsageError(f"unknown schema {which!r}; expected 'e' or 'business'")
    title, description, default_rules = _DOCUMENTS[which]
    return {
        "$schema": DIALECT,
        "$id": SCHEMA_URLS[which],
        "title": title,
        "description": description,
        **_object(default_rules if rules is None else rules, top_level=True),
    }
