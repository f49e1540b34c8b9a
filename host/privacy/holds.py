"""What an archive of the trail must not take: the records still under an open review."""

from __future__ import annotations

from collections.abc import Callable

from host.audit.trail import AuditLog
from host.privacy.office import pages
from host.privacy.reviews import DISPOSITION_FUNCTION, fold, read_disposition


def under_review(audit: AuditLog, open_query: Callable[[str], str], before: str) -> list[int]:
    """The seqs of the flagged records stamped before `before` whose review is open or referred.

    `open_query` unseals a disposition's query (the store's key); a disposition it cannot open
    raises, and the archive is refused: a review whose state cannot be read counts as open."""
    flagged = [r for r in pages(audit.flagged) if r.timestamp < before]
    if not flagged:
        return []
    records = pages(lambda limit, after: audit.of_function(DISPOSITION_FUNCTION, limit, after))
    dispositions = [d for d in (read_disposition(r, open_query) for r in records) if d is not None]
    return [review.seq for review in fold(flagged, dispositions) if review.state != "closed"]
