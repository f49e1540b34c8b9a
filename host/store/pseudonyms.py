"""Stable pseudonyms for de-identified records (GDPR pseudonymisation, HIPAA 164.514(c)).

A pseudonym is a keyed HMAC-SHA256 of the patient's internal id, which is itself a random
UUID assigned by the store, never derived from the patient's identifiers. Without the key,
which only the host holds (under the key directory, never given to a function), a
pseudonym cannot be linked back; with it, the same patient always gets the same pseudonym,
so de-identified exports can be joined. Rotating the key breaks that linkage on purpose.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

from host.keys import load_or_create_key

KEY_FILE = "pseudonym-hmac.key"
CONTEXT = b"wardfn-pseudonym-v1\0"


class Pseudonymizer:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_key_dir(cls, key_dir: Path) -> Pseudonymizer:
        return cls(load_or_create_key(key_dir / KEY_FILE))

    def pseudonym(self, patient_id: str) -> str:
        """`pz-` and 26 base32 characters (130 bits) of the keyed HMAC of the internal id."""
        digest = hmac.new(self._key, CONTEXT + patient_id.encode(), hashlib.sha256).digest()
        return "pz-" + base64.b32encode(digest).decode().lower()[:26]
