"""`wardfn audit status`, run as a user runs it: head, cursor and backlog, never the broker's password."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from host.audit.relay_cursor import RelayCursor
from host.store.database import SqliteDatabase
from tests.backends import SqliteBackend
from tests.e2e.server import WARDFN
from tests.host.audit.test_relay import _append


def _status(database: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WARDFN_")}
    return subprocess.run(
        [str(WARDFN), "audit", "status", *args],
        env={**clean, "WARDFN_DATABASE": str(database), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_new_trail_has_no_backlog_and_no_relay(tmp_path: Path) -> None:
    done = _status(tmp_path / "wardfn.db", "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "head_seq": 0,
        "sent_seq": 0,
        "backlog": 0,
        "relay_configured": False,
        "broker": None,
        "exchange": None,
    }
    assert "not configured (set WARDFN_AMQP_URL" in _status(tmp_path / "wardfn.db").stdout


def test_the_backlog_is_what_the_broker_has_not_confirmed(tmp_path: Path) -> None:
    database = tmp_path / "wardfn.db"
    _append(SqliteBackend(database), 12)
    cursor = RelayCursor(SqliteDatabase(database))
    try:
        assert cursor.advance(0, 5)
        assert not cursor.advance(0, 9)  # compare-and-set: the cursor no longer stands at 0
    finally:
        cursor.close()
    url = {"WARDFN_AMQP_URL": "amqp://relay:s3cret@127.0.0.1:5672/%2F"}

    done = _status(database, "--json", **url)
    text = _status(database, **url).stdout

    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert (status["head_seq"], status["sent_seq"], status["backlog"]) == (12, 5, 7)
    assert status["relay_configured"] and status["exchange"] == "wardfn.audit"
    assert "backlog:     7 records" in text
    assert "s3cret" not in done.stdout + text and "relay:***@" in text
