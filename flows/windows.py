"""Promotion windows of a stage (pipeline.yaml `windows:`): when a promotion may land.

    windows:
      - {kind: deny, cron: "0 22 * * FRI", duration: 60h, timezone: Europe/Berlin}
      - {kind: allow, days: [mon-fri], start: "08:00", end: "18:00", timezone: Europe/Berlin}
    on_window: wait        # or refuse (flows/config.py `Stage`)

A window is either a cron expression with a duration — each time it fires starts an occurrence
lasting `duration` — or a daily time range `start`-`end` ("HH:MM" or "HH:MM:SS") on `days`
(default every day); an end at or before the start ends on the next day, so `22:00`-`06:00` is a
night and `00:00`-`00:00` a whole day. A promotion may land at an instant inside no deny window
and, when the stage has allow windows, inside at least one of them. Occurrences are half-open:
the instant a deny window ends is free, the instant an allow window ends is not.

Times are wall-clock times in the window's `timezone` (an IANA name, default UTC) and so is the
arithmetic: Friday 22:00 + 60h is Monday 10:00 local even across a DST change. A local time the
change skips (02:30 on the spring night) is read with the offset before it, so it lands an hour
later on the clock; a repeated one (the autumn night) means its first pass.

Pure: no Prefect and no clock — every function takes `now`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from gates.common import Duration, duration_text

HORIZON = dt.timedelta(days=400)  # how far ahead opens_at looks for a free instant
# Occurrences opens_at may look at (~1 s): daily or weekly windows need a few hundred in 400 days;
# the bound is for a cron firing every second, which would otherwise take minutes to walk.
MAX_OCCURRENCES = 200_000
MAX_DURATION = dt.timedelta(days=366)  # longer is a freeze (`airlock freeze`), not a window

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


class NeverOpen(ValueError):
    """The windows leave no instant in the next HORIZON (or in the first MAX_OCCURRENCES window
    occurrences) when a promotion may land; callers refuse with this message, not wait for ever."""


class _Budget:
    """What one search may spend, shared by all its windows."""

    def __init__(self) -> None:
        self.left = MAX_OCCURRENCES

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise NeverOpen(
                "the windows leave no time when a promotion may land"
                f" in the first {MAX_OCCURRENCES:,} of their occurrences"
            )


class Window(BaseModel):
    """One window of a stage: `{kind, cron, duration, timezone}` or `{kind, days, start, end,
    timezone}`."""

    # strict as flows/config.py's _Strict, which cannot be imported here: config imports us
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["allow", "deny"]
    cron: str | None = None
    duration: Duration | None = None
    days: list[Day] | None = None  # None: every day
    start: dt.time | None = None
    end: dt.time | None = None
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:  # a fixed start: validation must not depend on the clock
            next(CronSim(value, dt.datetime(2000, 1, 1, tzinfo=dt.UTC)))
        except CronSimError as e:
            raise ValueError(f"{value!r} is not a cron expression: {str(e).lower()}") from None
        except StopIteration:
            raise ValueError(f"cron {value!r} never fires") from None
        return value

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: dt.timedelta | None) -> dt.timedelta | None:
        if value is not None and not dt.timedelta(0) < value <= MAX_DURATION:
            raise ValueError("must be positive and at most 366d, e.g. 60h or 90m")
        return value

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> Any:
        """`[mon-fri, sun]` → `[mon, tue, wed, thu, fri, sun]`; a range may wrap (`fri-mon`)."""
        if value is None or not isinstance(value, list):
            return value  # pydantic says what is wrong with a non-list
        if not value:
            raise ValueError("empty: leave `days` out for every day")
        found: set[int] = set()
        for item in value:
            ends = str(item).strip().lower().split("-")
            if len(ends) > 2 or any(e not in DAYS for e in ends):
                raise ValueError(
                    f"{item!r} is not a day: use {', '.join(DAYS)} or a range such as mon-fri"
                )
            first, last = DAYS.index(ends[0]), DAYS.index(ends[-1])
            found.update((first + i) % 7 for i in range((last - first) % 7 + 1))
        return [DAYS[i] for i in sorted(found)]

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 10:00 as the number 600 (base 60): say so, not 00:10
            raise ValueError('write the time in quotes, e.g. "10:00" (YAML reads 10:00 as 600)')
        m = _TIME.fullmatch(value.strip()) if isinstance(value, str) else None
        if m is None or int(m[1]) > 23 or int(m[2]) > 59 or int(m[3] or 0) > 59:
            raise ValueError(f'{value!r} is not a time of day: "HH:MM" or "HH:MM:SS"')
        return dt.time(int(m[1]), int(m[2]), int(m[3] or 0))

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name, e.g. Europe/Berlin or UTC)"
            ) from None
        return value

    @model_validator(mode="after")
    def _one_form(self) -> Window:
        cron = self.cron is not None or self.duration is not None
        times = self.start is not None or self.end is not None or self.days is not None
        if cron == times:
            raise ValueError(
                "a window has either cron + duration or start + end (with optional days)"
                + (", not both" if cron else "")
            )
        if cron and (self.cron is None or self.duration is None):
            raise ValueError("a cron window needs both cron and duration")
        if times and (self.start is None or self.end is None):
            raise ValueError("a time-range window needs both start and end")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # cached by zoneinfo


def opens_at(windows: Sequence[Window], now: dt.datetime) -> dt.datetime | None:
    """None if a promotion may land at `now`; else the earliest later instant when it may (in
    `now`'s time zone). NeverOpen if there is none within HORIZON.

    Each step jumps to the end of the deny occurrences covering the candidate, or to the next
    start of an allow window, and checks again: overlapping and back-to-back windows chain."""
    t = start = _utc(now)
    deny = [w for w in windows if w.kind == "deny"]
    allow = [w for w in windows if w.kind == "allow"]
    budget = _Budget()
    while True:
        budget.spend()
        later: dt.datetime | None
        if ends := [e for w in deny if (e := _covering(w, t, budget)) is not None]:
            later = max(ends)
        elif allow and not _inside_any(allow, t):
            later = min((s for w in allow if (s := _next_start(w, t)) is not None), default=None)
        else:
            return None if t == start else t.astimezone(now.tzinfo)
        if later is None or t > start + HORIZON:  # never open again, or searched far enough
            raise NeverOpen(
                "the windows leave no time when a promotion may land"
                f" in the next {HORIZON.days} days"
            )
        t = later


def describe(window: Window) -> str:
    """One short line: `deny 0 22 * * FRI for 2d 12h (Europe/Berlin)`, `allow mon-fri
    09:00-17:00 (UTC)`."""
    return f"{window.kind} {_when(window)}"


def blocked_line(windows: Sequence[Window], now: dt.datetime) -> str | None:
    """None if a promotion may land at `now`; else one line naming the window in the way and when
    promotions open, in that window's zone: `inside deny window 0 22 * * FRI for 2d 12h
    (Europe/Berlin) until 2026-12-07T10:00:00+01:00`."""
    t = _utc(now)
    allow = [w for w in windows if w.kind == "allow"]
    deny = next((w for w in windows if w.kind == "deny" and _covering(w, t) is not None), None)
    if deny is not None:
        why, zone = f"inside deny window {_when(deny)}", deny.zone
    elif allow and not _inside_any(allow, t):
        names = "; ".join(_when(w) for w in allow)
        why = f"outside the allow window{'s' if len(allow) > 1 else ''} {names}"
        zone = allow[0].zone
    else:
        return None
    try:
        opens = opens_at(windows, now)
    except NeverOpen as e:
        return f"{why}; {e}"
    return None if opens is None else f"{why} until {opens.astimezone(zone).isoformat()}"


# -- occurrences (UTC instants) -------------------------------------------------------------------


def _utc(now: dt.datetime) -> dt.datetime:
    """UTC inside: datetimes of one zone compare by wall clock, wrong in a repeated hour."""
    if now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(dt.UTC)


def _covering(w: Window, t: dt.datetime, budget: _Budget | None = None) -> dt.datetime | None:
    """The end of `w`'s latest occurrence holding `t` (start <= t < end), or None. With a
    budget, a cron window's later occurrences that start before that end (overlapping or back
    to back) are followed too: the end of the whole run, in one pass of cronsim."""
    if w.cron is not None:
        # the latest fire at or before t has the latest end: ends grow with starts
        fire = next((f for f in _fires(w, t, reverse=True) if f <= t), None)
        end = None if fire is None else _cron_end(w, fire)
        if end is None or end <= t:
            return None
        if budget is not None:
            for later in _fires(w, fire, reverse=False):
                if later > end or later > t + HORIZON:
                    break
                budget.spend()
                end = max(end, _cron_end(w, later))
        return end
    # a range holding t started on t's local date or, crossing midnight, the day before
    day = t.astimezone(w.zone).date()
    ends = [
        e
        for d in (day - dt.timedelta(days=1), day)
        if _on(w, d)
        for s, e in [_range(w, d)]
        if s <= t < e
    ]
    return max(ends, default=None)


def _inside_any(windows: Sequence[Window], t: dt.datetime) -> bool:
    return any(_covering(w, t) is not None for w in windows)


def _next_start(w: Window, t: dt.datetime) -> dt.datetime | None:
    """The first start of an occurrence of `w` after `t`, or None if it never starts again."""
    if w.cron is not None:
        return next((f for f in _fires(w, t, reverse=False) if f > t), None)
    day = t.astimezone(w.zone).date()
    for i in range(9):  # a week and a day covers every weekday and today's start already gone
        d = day + dt.timedelta(days=i)
        if _on(w, d) and (s := _range(w, d)[0]) > t:
            return s
    return None


def _fires(w: Window, t: dt.datetime, *, reverse: bool) -> Iterator[dt.datetime]:
    """`w.cron`'s fire times after `t` (reverse: at or before `t`, newest first), in UTC.

    cronsim works in the zone (so "22:00" is local) and yields strictly after/before its start;
    a start one second later makes the reverse search include `t` itself. Callers still compare:
    in a repeated autumn hour cronsim's local times can be an hour off the instant."""
    assert w.cron is not None
    origin = (t.replace(microsecond=0) + dt.timedelta(seconds=1)) if reverse else t
    for fire in CronSim(w.cron, origin.astimezone(w.zone), reverse=reverse):
        yield fire.astimezone(dt.UTC)


def _cron_end(w: Window, fire: dt.datetime) -> dt.datetime:
    assert w.duration is not None
    return (fire.astimezone(w.zone) + w.duration).astimezone(dt.UTC)  # wall-clock addition


def _on(w: Window, day: dt.date) -> bool:
    return w.days is None or DAYS[day.weekday()] in w.days


def _range(w: Window, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The occurrence of a time-range window that starts on local date `day`."""
    assert w.start is not None and w.end is not None
    last = day + dt.timedelta(days=1) if w.end <= w.start else day
    start = dt.datetime.combine(day, w.start, tzinfo=w.zone)
    end = dt.datetime.combine(last, w.end, tzinfo=w.zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def _when(w: Window) -> str:
    """`describe` without the kind: `0 22 * * FRI for 2d 12h (Europe/Berlin)`."""
    if w.cron is not None and w.duration is not None:
        when = f"{w.cron} for {duration_text(w.duration)}"
    else:
        assert w.start is not None and w.end is not None  # one form, validated
        days = _days_text(w.days)
        when = f"{days + ' ' if days else ''}{_clock(w.start)}-{_clock(w.end)}"
    return f"{when} ({w.timezone})"


def _clock(t: dt.time) -> str:
    return t.strftime("%H:%M:%S" if t.second else "%H:%M")


def _days_text(days: list[Day] | None) -> str:
    """`mon-fri`, `sat,sun`, `mon,wed-fri`; "" for every day."""
    if days is None or len(days) == 7:
        return ""
    index = [DAYS.index(d) for d in days]
    runs: list[list[int]] = []
    for i in index:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ",".join(
        DAYS[r[0]] if len(r) == 1 else f"{DAYS[r[0]]}{'-' if len(r) > 2 else ','}{DAYS[r[-1]]}"
        for r in runs
    )
