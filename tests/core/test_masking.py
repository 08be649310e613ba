"""mask, masked_repr and MaskedRepr: the one way a credential may appear in a message or a repr."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from qywx_cli.core import errors
from qywx_cli.core.masking import MaskedRepr, mask, masked_repr


@dataclass(frozen=True, repr=False)
class Held:
    name: str
    secret: str | None
    count: int


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        (None, ""),
        ("", ""),
        ("short", "******"),
        ("123456789", "******"),
        ("TICKET-abcdef", "TIC***def"),
    ],
)
def test_mask_keeps_only_the_ends_of_long_values(secret: str | None, shown: str) -> None:
    assert mask(secret) == shown


def test_masked_repr_reads_like_a_dataclass_repr_with_secrets_masked() -> None:
    held = Held("a", "TICKET-abcdef", 3)
    assert masked_repr(held, {"secret"}) == "Held(name='a', secret='TIC***def', count=3)"
    assert masked_repr(held) == "Held(name='a', secret='TICKET-abcdef', count=3)"
    assert masked_repr(Held("a", None, 0), {"secret"}) == "Held(name='a', secret=None, count=0)"


def test_masked_repr_picks_fields_and_takes_ready_made_values() -> None:
    held = Held("a", "TICKET-abcdef", 3)
    shown = masked_repr(held, {"secret"}, names=["count", "name"], shown={"name": {"k": "v"}})
    assert shown == "Held(count=3, name={'k': 'v'})"


@dataclass(frozen=True, repr=False)
class Record(MaskedRepr):
    _secret_fields = frozenset({"secret"})
    _repr_fields = ("secret", "name")

    name: str
    secret: str
    hidden: int


@dataclass(frozen=True, repr=False)
class Plain(MaskedRepr):
    name: str


def test_masked_repr_base_masks_its_secret_fields_and_shows_the_chosen_ones() -> None:
    assert repr(Record("a", "TICKET-abcdef", 1)) == "Record(secret='TIC***def', name='a')"
    assert repr(Plain("a")) == "Plain(name='a')"


def test_errors_reexports_the_same_helpers() -> None:
    assert errors.mask is mask and errors.masked_repr is masked_repr
