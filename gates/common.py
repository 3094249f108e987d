"""Helpers the report gates (gates/scan.py, gates/tests.py) share: reading JSON, times, rows.

Reading JSON (`load_json`): a report is UTF-8, with or without a BOM, or UTF-16 with a BOM
(PowerShell 5's `>` writes that). NaN and Infinity are refused (not JSON), and so is a key that
occurs twice in one object: the JSON spec leaves its meaning open and Python would keep the last
one silently, so a second `"Results": []` would drop every finding and a second `summary`/`tests`
pair would flip a pytest verdict.

Every object is checked, not only the few that decide a verdict today: any object can (a second
`Severity` inside one vulnerability changes the count as surely as a second `Results`), and a
partial check would have to be kept in step with every parser. The price is measured: the stdlib
parser with an `object_pairs_hook` reads the 78 MB, 20,000-vulnerability Trivy bench report in
~0.37 s where pydantic-core's `from_json` (no duplicate-key check) took ~0.19 s; the whole gate
stays around 0.6 s, under its 1 s budget (bench/scan_bench.py).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator

T = TypeVar("T")

CLOCK_SKEW = dt.timedelta(minutes=5)  # a report dated further ahead than this is in the future
MAX_ROWS = 50  # per-item rows (blocking findings, failing tests) in a result; then "… N more"

_BOMS_UTF16 = (b"\xff\xfe", b"\xfe\xff")
_BOM_UTF8 = b"\xef\xbb\xbf"


class JSONError(ValueError):
    """Bytes that are not one JSON document we accept; the message is one line, no source."""


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building a big acyclic tree: halves the parse of a 60 MB report
    (each allocation burst otherwise triggers collections that scan every object built so far)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def decode_text(data: bytes) -> str:
    """Report bytes as text: UTF-16 with a BOM, else UTF-8 (a leading BOM dropped)."""
    try:
        if data.startswith(_BOMS_UTF16):
            return data.decode("utf-16")
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        what = "UTF-16" if data.startswith(_BOMS_UTF16) else "UTF-8"
        raise JSONError(f"not {what} text ({e.reason} at byte {e.start})") from None


def first_char(data: bytes) -> str:
    """The first character after any BOM and whitespace ("" if none): "{", "[", "<", …."""
    head = data[:256]
    if head.startswith(_BOMS_UTF16):
        text = head[: len(head) // 2 * 2].decode("utf-16", errors="replace")
    else:
        text = head.decode("utf-8", errors="replace").removeprefix("\ufeff")
    stripped = text.lstrip()
    return stripped[:1]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):  # the fast path: one C call and a comparison per object
        return obj
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            shown = key if len(key) <= 80 else key[:79] + "…"
            raise JSONError(
                f"duplicate key {shown!r} in one object (which one counts is undefined)"
            )
        seen.add(key)
    raise AssertionError("unreachable: fewer keys than pairs means a repeated key")


def _no_constant(name: str) -> Any:
    raise JSONError(f"{name} is not a JSON value")


def load_json(data: bytes, *, unique_keys: bool = True) -> Any:
    """Parse a JSON report; JSONError (one line) for anything not accepted (see the docstring).

    `unique_keys=False` only for sniffing a format: it lets `detect` name the format of a report
    that `parse` will then refuse with the real reason."""
    text = decode_text(data)
    hook = _unique_keys if unique_keys else None
    try:
        with gc_paused():
            return json.loads(text, object_pairs_hook=hook, parse_constant=_no_constant)
    except JSONError:
        raise
    except RecursionError:
        raise JSONError("nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, an integer too large to convert
        raise JSONError(" ".join(str(e).split())) from None


# -- times ---------------------------------------------------------------------------------------


def as_utc(t: dt.datetime) -> dt.datetime:
    """An aware datetime; a naive one is taken to be UTC."""
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t


def parse_time(text: str) -> dt.datetime:
    """RFC 3339 / ISO 8601 ("Z" or an offset; naive means UTC; TestNG's " UTC" suffix too), as
    an aware datetime. Fractions beyond microseconds (Go writes nanoseconds) are cut off.
    ValueError if unreadable."""
    text = text.strip()
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    return as_utc(dt.datetime.fromisoformat(text))


# -- rows and words ------------------------------------------------------------------------------


def plural(n: int, word: str, words: str | None = None) -> str:
    """ "1 test", "2 tests"; `words` for an irregular plural."""
    return f"{n} {word if n == 1 else words or word + 's'}"


def capped_rows(
    items: Sequence[T],
    row: Callable[[T], dict[str, str]],
    more: Callable[[str], dict[str, str]],
    limit: int = MAX_ROWS,
) -> list[dict[str, str]]:
    """One row per item, at most `limit`; then one `more("… N more")` row for the rest."""
    rows = [row(item) for item in items[:limit]]
    if len(items) > limit:
        rows.append(more(f"… {len(items) - limit} more"))
    return rows


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SHORT_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", re.IGNORECASE)


def _short_duration(value: object) -> object:
    """Accept "7d", "24h", "90m", "30s", "2w" besides what pydantic reads (ISO 8601, seconds)."""
    if isinstance(value, str):
        m = _SHORT_DURATION.fullmatch(value)
        if m:
            try:
                return dt.timedelta(seconds=float(m[1]) * _UNITS[m[2].lower()])
            except OverflowError:
                raise ValueError(f"{value.strip()!r} is too long a duration") from None
    return value


Duration = Annotated[dt.timedelta, BeforeValidator(_short_duration)]


def duration_text(td: dt.timedelta) -> str:
    """ "7d", "1d 2h", "5m 3s", "-2m": the largest unit and the next one, if not zero."""
    seconds = int(td.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    units = [(seconds // 86400, "d"), (seconds // 3600 % 24, "h"), (seconds // 60 % 60, "m")]
    units.append((seconds % 60, "s"))
    first = next((i for i, (n, _) in enumerate(units) if n), len(units) - 1)
    return sign + (" ".join(f"{n}{u}" for n, u in units[first : first + 2] if n) or "0s")
