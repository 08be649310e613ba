"""The one way a credential may appear in a message or a repr.

Reprs reach logs, tracebacks and debuggers, so every record that holds a credential (a
SuiteTicket, an access token, a permanent code, a login code) derives its ``repr`` from
:class:`MaskedRepr`, and a message that must hint at a value passes it through
:func:`mask`. Keeping both here, with no dependency on the rest of the package, lets any
core module use them without an import cycle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from typing import Any, ClassVar

__all__ = ["MaskedRepr", "mask", "masked_repr"]


def mask(secret: str | None, keep: int = 3) -> str:
    """Show just enough of a secret to tell two apart, never enough to use it."""
    if not secret:
        return ""
    if len(secret) <= keep * 3:
        return "*" * 6
    return f"{secret[:keep]}***{secret[-keep:]}"


def masked_repr(
    obj: Any,
    secret_fields: Collection[str] = (),
    *,
    names: Iterable[str] | None = None,
    shown: Mapping[str, object] | None = None,
) -> str:
    """A dataclass's ``Type(name=value, …)`` with each of ``secret_fields`` passed through mask.

    ``None`` stays ``None``. ``names`` picks the fields (default: every dataclass field,
    in order) and ``shown`` gives ready-made display values, such as a mapping masked per
    key.
    """
    chosen = [f.name for f in dataclasses.fields(obj)] if names is None else names
    parts = []
    for name in chosen:
        if shown is not None and name in shown:
            value = shown[name]
        else:
            value = getattr(obj, name)
            if name in secret_fields and value is not None:
                value = mask(str(value))
        parts.append(f"{name}={value!r}")
    return f"{type(obj).__name__}({', '.join(parts)})"


class MaskedRepr:
    """Base of credential-holding dataclasses (declared with ``repr=False``).

    ``_secret_fields`` names the fields shown masked; ``_repr_fields``, when set, picks
    and orders the fields shown (default: every dataclass field).
    """

    _secret_fields: ClassVar[frozenset[str]] = frozenset()
    _repr_fields: ClassVar[tuple[str, ...] | None] = None

    def __repr__(self) -> str:
        return masked_repr(self, self._secret_fields, names=self._repr_fields)
