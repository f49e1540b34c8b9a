"""Paging through a patient's record as FHIR's `Patient/$everything` pages: plain Python, testable under CPython.

A page holds at most `count` resources and about `budget` bytes of them, in a fixed order: the
function's resource types in turn, each type's resources by id. The next page starts where this one
stopped; its token (`urn:wardfn:page:` and base64url of [type position, offset]) goes back as the
`page` argument. A token names a position in the record and nothing about the patient. Every page
says which types the decision withheld, so that no page reads as a record without them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wardfn_withheld import Withheld

PAGE_PREFIX = "urn:wardfn:page:"
DEFAULT_COUNT = 1000
MAX_COUNT = 5000
# (resource type, FHIR search parameters) -> the matching resources as JSON text; raises Withheld.
Query = Callable[[str, Sequence[tuple[str, str]]], list[str]]


class BadPageToken(Exception):
    """The page argument is not a token this function gave out."""


@dataclass
class Page:
    items: list[tuple[str, str]]  # (resource type, the resource as stored JSON text)
    withheld: list[str]  # the types the decision withheld, on every page
    next_token: str | None  # None: this is the last page
    first: bool


def encode(position: int, offset: int) -> str:
    raw = json.dumps([position, offset], separators=(",", ":")).encode()
    return PAGE_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, types: int) -> tuple[int, int]:
    """The (type position, offset) a token names; BadPageToken for anything this module did not make."""
    text = token.removeprefix(PAGE_PREFIX)
    try:
        found = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        raise BadPageToken("the page token is not one this function gave out") from None
    if (
        not isinstance(found, list)
        or len(found) != 2
        or not all(type(n) is int and n >= 0 for n in found)
        or found[0] >= types
    ):
        raise BadPageToken("the page token is not one this function gave out")
    return found[0], found[1]


def read_page(query: Query, types: Sequence[str], count: int, token: str | None, budget: int) -> Page:
    """One page of the record: up to `count` resources, stopping early past `budget` bytes (never empty
    while anything is left), with the token of the next page if there is more."""
    position, offset = decode(token, len(types)) if token else (0, 0)
    withheld = []
    for resource_type in types:
        try:
            query(resource_type, (("_count", "0"),))
        except Withheld:
            withheld.append(resource_type)
    items: list[tuple[str, str]] = []
    used = 0
    while position < len(types):
        resource_type = types[position]
        if resource_type in withheld:
            position, offset = position + 1, 0
            continue
        room = count - len(items)
        # One more than there is room for: whether this type goes on past the page.
        found = query(resource_type, (("_offset", str(offset)), ("_count", str(room + 1))))
        for taken, raw in enumerate(found[:room]):
            if items and used + len(raw) > budget:
                return Page(items, withheld, encode(position, offset + taken), token is None)
            items.append((resource_type, raw))
            used += len(raw)
        if len(found) > room:
            return Page(items, withheld, encode(position, offset + room), token is None)
        position, offset = position + 1, 0
    return Page(items, withheld, None, token is None)
