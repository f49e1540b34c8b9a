"""Ids and days drawn from a patient's random stream, for the history profile's generators."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta


def new_id(rng: random.Random) -> str:
    """A random (version 4) UUID from the stream."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def day_between(rng: random.Random, first: date, last: date) -> date:
    """A day from `first` to `last`, both included (`first` if they are the wrong way round)."""
    return first + timedelta(days=rng.randint(0, max(0, (last - first).days)))


def at(day: date, minutes: int) -> datetime:
    """`minutes` after midnight UTC on `day`."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=minutes)
