"""The receiver's durable record of the event ids it has sent to Prefect.

Prefect drops an event id it has seen, but only for about 30 minutes and not across its restart;
a registry may redeliver later than that, and a captured CI call may be replayed. This record
(SQLite, WAL) outlives both: an id sent within `keep` seconds (default 7 days) is not sent again.
At most `cap` ids are kept (default 1,000,000, about 120 MB); beyond it the oldest go first.

Several receiver processes on one host may share the file (SQLite serialises the writers); on
different hosts each keeps its own. The methods block briefly: the receiver calls them in a
worker thread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from registry.errors import BadInputError

KEEP = 7 * 24 * 3600  # seconds: longer than any registry's redelivery or a CI call's max age
CAP = 1_000_000

_SCHEMA = """
create table if not exists seen (id text primary key, first_seen real not null);
create index if not exists seen_first_seen on seen (first_seen);
"""


class Seen:
    def __init__(
        self,
        path: Path | str,
        *,
        keep: float = KEEP,
        cap: int = CAP,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`path` ":memory:" keeps the record in this process only (tests)."""
        self.keep, self.cap, self.clock = keep, cap, clock
        self._lock = threading.Lock()  # one connection, used from worker threads in turn
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # timeout: how long to wait for another process's write (busy), in seconds
            self._db = sqlite3.connect(path, timeout=5.0, check_same_thread=False)
            self._db.execute("pragma journal_mode=wal")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise BadInputError(f"cannot open the webhook state {path}: {e}") from None

    def seen(self, ids: Iterable[str]) -> set[str]:
        """Those of `ids` sent within the last `keep` seconds."""
        since = self.clock() - self.keep
        query = "select 1 from seen where id = ? and first_seen >= ?"
        with self._lock:
            return {i for i in ids if self._db.execute(query, (i, since)).fetchone()}

    def record(self, ids: Iterable[str]) -> None:
        """Remembers `ids` as sent now (an id already there keeps its first time), and forgets
        the expired and those beyond the cap."""
        now = self.clock()
        with self._lock, self._db:  # one transaction
            self._db.execute("delete from seen where first_seen < ?", (now - self.keep,))
            self._db.executemany(
                "insert or ignore into seen (id, first_seen) values (?, ?)",
                [(i, now) for i in ids],
            )
            # rowids grow with each insert: all but the newest `cap` rows, without counting
            self._db.execute(
                "delete from seen where rowid <= (select max(rowid) from seen) - ?", (self.cap,)
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
