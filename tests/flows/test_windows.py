"""Promotion windows (flows/windows.py): when a promotion may land, and bad windows at load.

Pure and fast: no Prefect, no registry, no clock — every call is given its `now`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from cronsim import CronSim

from flows import windows
from flows.config import load
from flows.windows import NeverOpen, Window, blocked_line, describe, opens_at
from registry.errors import BadInputError
from tests.flows.helpers import default_stages

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC
WEEKEND = {"kind": "deny", "cron": "0 22 * * FRI", "duration": "60h", "timezone": "Europe/Berlin"}


def window(**given: Any) -> Window:
    return Window.model_validate(given)


def at(*parts: int, tz: dt.tzinfo = UTC) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=tz)  # type: ignore[misc]


# ---------------------------------------------------------------------------- a cron deny window


def test_the_berlin_weekend_is_denied_from_friday_22_for_60_hours() -> None:
    w = [window(**WEEKEND)]
    monday_10 = at(2026, 12, 7, 10, tz=BERLIN)
    assert opens_at(w, at(2026, 12, 5, 12, tz=BERLIN)) == monday_10  # Saturday noon
    assert opens_at(w, at(2026, 12, 4, 22, tz=BERLIN)) == monday_10  # its first instant
    assert opens_at(w, at(2026, 12, 7, 9, 59, 59, tz=BERLIN)) == monday_10
    assert opens_at(w, at(2026, 12, 4, 21, 59, 59, tz=BERLIN)) is None  # before it
    assert opens_at(w, monday_10) is None  # its exact end is free
    assert opens_at(w, at(2026, 12, 9, 12, tz=BERLIN)) is None  # Wednesday


def test_the_answer_is_in_the_zone_of_now() -> None:
    opens = opens_at([window(**WEEKEND)], at(2026, 12, 5, 11))  # Saturday 11:00 UTC
    assert opens is not None and opens.isoformat() == "2026-12-07T09:00:00+00:00"
    tokyo = at(2026, 12, 5, 20, tz=ZoneInfo("Asia/Tokyo"))
    opens = opens_at([window(**WEEKEND)], tokyo)
    assert opens is not None and opens.isoformat() == "2026-12-07T18:00:00+09:00"


def test_the_blocked_line_names_the_window_and_when_it_opens_in_its_zone() -> None:
    w = [window(**WEEKEND)]
    assert blocked_line(w, at(2026, 12, 5, 11)) == (
        "inside deny window 0 22 * * FRI for 2d 12h (Europe/Berlin) until 2026-12-07T10:00:00+01:00"
    )
    assert blocked_line(w, at(2026, 12, 7, 9)) is None  # Monday 10:00 in Berlin


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        opens_at([window(**WEEKEND)], dt.datetime(2026, 12, 5, 12))
    with pytest.raises(ValueError, match="timezone-aware"):
        blocked_line([window(**WEEKEND)], dt.datetime(2026, 12, 5, 12))


def test_no_windows_is_always_open() -> None:
    assert opens_at([], at(2026, 12, 5, 12)) is None
    assert blocked_line([], at(2026, 12, 5, 12)) is None


# ---------------------------------------------------------------------------- allow windows


def test_allow_windows_mean_only_then() -> None:
    office = [window(kind="allow", days=["mon-fri"], start="09:00", end="17:00")]
    assert opens_at(office, at(2026, 12, 9, 12)) is None  # Wednesday noon
    assert opens_at(office, at(2026, 12, 9, 9)) is None  # its first instant
    assert opens_at(office, at(2026, 12, 9, 17)) == at(2026, 12, 10, 9)  # its end is closed
    assert opens_at(office, at(2026, 12, 9, 8, 59)) == at(2026, 12, 9, 9)
    assert opens_at(office, at(2026, 12, 11, 18)) == at(2026, 12, 14, 9)  # Friday evening
    assert blocked_line(office, at(2026, 12, 12, 12)) == (
        "outside the allow window mon-fri 09:00-17:00 (UTC) until 2026-12-14T09:00:00+00:00"
    )


def test_the_earliest_of_several_allow_windows_opens() -> None:
    allow = [
        window(kind="allow", days=["mon"], start="09:00", end="10:00"),
        window(kind="allow", cron="0 6 * * SAT", duration="1h"),
    ]
    assert opens_at(allow, at(2026, 12, 9, 12)) == at(2026, 12, 12, 6)  # Wed -> Sat 06:00
    assert opens_at(allow, at(2026, 12, 12, 6, 30)) is None
    assert opens_at(allow, at(2026, 12, 12, 7)) == at(2026, 12, 14, 9)  # Sat 07:00 -> Mon


def test_a_deny_window_inside_an_allow_window_wins() -> None:
    ws = [
        window(kind="allow", start="09:00", end="17:00"),
        window(kind="deny", start="16:00", end="18:00"),
    ]
    assert opens_at(ws, at(2026, 12, 9, 15)) is None
    assert opens_at(ws, at(2026, 12, 9, 16, 30)) == at(2026, 12, 10, 9)  # past the allow end
    assert blocked_line(ws, at(2026, 12, 9, 16, 30)) == (
        "inside deny window 16:00-18:00 (UTC) until 2026-12-10T09:00:00+00:00"
    )


# ---------------------------------------------------------------------------- time ranges


def test_a_range_ending_before_it_starts_crosses_midnight() -> None:
    night = [window(kind="deny", days=["fri"], start="22:00", end="06:00", timezone="UTC")]
    assert opens_at(night, at(2026, 12, 12, 3)) == at(2026, 12, 12, 6)  # Saturday 03:00
    assert opens_at(night, at(2026, 12, 11, 23)) == at(2026, 12, 12, 6)  # Friday 23:00
    assert opens_at(night, at(2026, 12, 11, 21)) is None
    assert opens_at(night, at(2026, 12, 10, 23)) is None  # Thursday night: not a day of it
    assert opens_at(night, at(2026, 12, 12, 23)) is None  # Saturday night either


def test_whole_days_back_to_back() -> None:
    weekend = [window(kind="deny", days=["sat", "sun"], start="00:00", end="00:00")]
    assert opens_at(weekend, at(2026, 12, 12, 12)) == at(2026, 12, 14)  # Sat -> Monday 00:00
    assert opens_at(weekend, at(2026, 12, 11, 23, 59)) is None


def test_seconds_resolution() -> None:
    burst = [window(kind="allow", start="10:00:00", end="10:00:05")]
    assert opens_at(burst, at(2026, 12, 9, 9, 59, 59)) == at(2026, 12, 9, 10)
    assert opens_at(burst, at(2026, 12, 9, 10, 0, 4).replace(microsecond=900_000)) is None
    assert opens_at(burst, at(2026, 12, 9, 10, 0, 5)) == at(2026, 12, 10, 10)
    pause = [window(kind="deny", start="10:00:00", end="10:00:05")]
    half = at(2026, 12, 9, 10, 0, 2).replace(microsecond=500_000)
    assert opens_at(pause, half) == at(2026, 12, 9, 10, 0, 5)
    assert describe(burst[0]) == "allow 10:00-10:00:05 (UTC)"


# ---------------------------------------------------------------------------- chained windows


def test_overlapping_deny_windows_chain() -> None:
    ws = [
        window(kind="deny", cron="0 20 * * *", duration="3h"),  # 20:00-23:00
        window(kind="deny", start="22:00", end="02:00"),  # 22:00-02:00
        window(kind="deny", cron="0 1 * * *", duration="2h"),  # 01:00-03:00
    ]
    assert opens_at(ws, at(2026, 12, 9, 21)) == at(2026, 12, 10, 3)
    assert opens_at(ws, at(2026, 12, 10, 2, 30)) == at(2026, 12, 10, 3)
    assert opens_at(ws, at(2026, 12, 10, 3)) is None
    assert blocked_line(ws, at(2026, 12, 9, 21)) == (
        "inside deny window 0 20 * * * for 3h (UTC) until 2026-12-10T03:00:00+00:00"
    )


def test_back_to_back_deny_windows_chain() -> None:
    ws = [
        window(kind="deny", start="10:00", end="11:00"),
        window(kind="deny", start="11:00", end="12:00"),
    ]
    assert opens_at(ws, at(2026, 12, 9, 10, 30)) == at(2026, 12, 9, 12)


def test_a_cron_window_overlapping_itself_chains() -> None:
    hourly = [window(kind="deny", cron="0 * * * 1-5", duration="90m")]  # weekdays, always
    assert opens_at(hourly, at(2026, 12, 9, 12)) == at(2026, 12, 12, 0, 30)  # Fri 23:00 + 90m


def test_a_run_of_back_to_back_cron_occurrences_is_walked_in_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[bool] = []

    def counted(expr: str, start: dt.datetime, reverse: bool = False) -> CronSim:
        made.append(reverse)
        return CronSim(expr, start, reverse=reverse)

    monkeypatch.setattr(windows, "CronSim", counted)
    minutes = [window(kind="deny", cron="* 0-5 * * *", duration="1m")]  # 360 of them, 00:00-06:00
    assert opens_at(minutes, at(2026, 12, 9, 0, 10)) == at(2026, 12, 9, 6)
    assert len(made) <= 4, made  # not one cronsim per occurrence


def test_windows_that_never_open_say_so() -> None:
    always = [window(kind="deny", cron="0 0 * * *", duration="36h")]
    with pytest.raises(NeverOpen, match="no time when a promotion may land"):
        opens_at(always, at(2026, 12, 9, 12))
    line = blocked_line(always, at(2026, 12, 9, 12))
    assert line is not None
    assert line.startswith("inside deny window 0 0 * * * for 1d 12h (UTC); the windows leave")
    allow_within_deny = [
        window(kind="allow", start="10:00", end="11:00"),
        window(kind="deny", start="09:00", end="12:00"),
    ]
    with pytest.raises(NeverOpen, match="in the next 400 days"):
        opens_at(allow_within_deny, at(2026, 12, 9, 12))


# ---------------------------------------------------------------------------- DST in Berlin


def test_the_weekend_ends_at_monday_10_local_across_dst_changes() -> None:
    w = [window(**WEEKEND)]
    # spring: Sunday 2026-03-29 02:00 CET -> 03:00 CEST; the window is 59 real hours long
    assert opens_at(w, at(2026, 3, 28, 12)) == at(2026, 3, 30, 10, tz=BERLIN)
    assert opens_at(w, at(2026, 3, 30, 7, 59)) == at(2026, 3, 30, 8)  # 10:00 CEST in UTC
    assert opens_at(w, at(2026, 3, 30, 8)) is None
    # autumn: Sunday 2026-10-25 03:00 CEST -> 02:00 CET; 61 real hours
    assert opens_at(w, at(2026, 10, 23, 20)) == at(2026, 10, 26, 9)  # Fri 22:00 CEST in UTC
    assert opens_at(w, at(2026, 10, 23, 19, 59)) is None
    assert opens_at(w, at(2026, 10, 26, 8, 59)) == at(2026, 10, 26, 10, tz=BERLIN)


def test_a_range_keeps_its_local_times_across_the_spring_change() -> None:
    office = [
        window(kind="allow", days=["mon-fri"], start="09:00", end="17:00", timezone=BERLIN.key)
    ]
    assert opens_at(office, at(2026, 3, 27, 7, 30)) == at(2026, 3, 27, 8)  # 09:00 CET
    assert opens_at(office, at(2026, 3, 30, 6, 30)) == at(2026, 3, 30, 7)  # 09:00 CEST
    assert opens_at(office, at(2026, 3, 27, 15, 30)) is None  # 16:30 CET: inside
    assert opens_at(office, at(2026, 3, 30, 15, 30)) == at(2026, 3, 31, 7)  # 17:30 CEST: closed
    night = [window(kind="deny", days=["sat"], start="22:00", end="06:00", timezone=BERLIN.key)]
    # Saturday 22:00 CET to Sunday 06:00 CEST: 7 real hours
    assert opens_at(night, at(2026, 3, 28, 21)) == at(2026, 3, 29, 6, tz=BERLIN)
    assert opens_at(night, at(2026, 3, 29, 4)) is None  # 06:00 CEST


# ---------------------------------------------------------------------------- describe, days


def test_describe() -> None:
    assert describe(window(**WEEKEND)) == "deny 0 22 * * FRI for 2d 12h (Europe/Berlin)"
    office = window(kind="allow", days=["MON-fri"], start="09:00", end="17:00")
    assert describe(office) == "allow mon-fri 09:00-17:00 (UTC)"
    assert describe(window(kind="deny", days=["sun", "sat"], start="0:00", end="00:00")) == (
        "deny sat,sun 00:00-00:00 (UTC)"
    )
    wrapped = window(kind="deny", days=["fri-mon", "wed"], start="22:00", end="06:00")
    assert wrapped.days == ["mon", "wed", "fri", "sat", "sun"]
    assert describe(wrapped) == "deny mon,wed,fri-sun 22:00-06:00 (UTC)"
    assert describe(window(kind="allow", start="22:00", end="06:00")) == "allow 22:00-06:00 (UTC)"


# ---------------------------------------------------------------------------- pipeline.yaml


def pipeline_file(tmp_path: Path, **qa: Any) -> Path:
    stages = default_stages()
    stages[1].update(qa)
    path = tmp_path / "pipeline.yaml"
    text = yaml.safe_dump({"registries": {"local": {"url": "127.0.0.1:5000"}}, "stages": stages})
    path.write_text(text)
    return path


def test_a_stage_loads_its_windows_and_on_window(tmp_path: Path) -> None:
    pipeline = load(pipeline_file(tmp_path, windows=[WEEKEND], on_window="refuse"))
    qa = pipeline.stage("qa")
    assert qa.windows == [window(**WEEKEND)] and qa.on_window == "refuse"
    assert qa.windows[0].duration == dt.timedelta(hours=60)
    prod = pipeline.stage("prod")
    assert prod.windows == [] and prod.on_window == "wait"  # the defaults
    section = pipeline.policy(qa).stage  # what a promotion record names
    assert section["windows"][0]["cron"] == "0 22 * * FRI" and section["on_window"] == "refuse"


BAD = [
    ({"cron": "0 25 * * FRI"}, "windows[0].cron: '0 25 * * FRI' is not a cron expression"),
    ({"timezone": "Mars/Olympus"}, "windows[0].timezone: unknown time zone 'Mars/Olympus'"),
    ({"duration": "0s"}, "windows[0].duration: must be positive"),
    ({"duration": None}, "windows[0]: a cron window needs both cron and duration"),
    ({"start": "10:00", "end": "11:00"}, "windows[0]: a window has either cron + duration"),
    ({"cron": None, "duration": None, "start": "10:00"}, "a time-range window needs both"),
    ({"cron": None, "duration": None, "start": "24:00", "end": "01:00"}, "not a time of day"),
    ({"cron": None, "duration": None, "start": 600, "end": "11:00"}, "write the time in quotes"),
    (
        {"cron": None, "duration": None, "days": ["funday"], "start": "10:00", "end": "11:00"},
        "'funday' is not a day",
    ),
    ({"cron": None, "duration": None, "days": [], "start": "10:00", "end": "11:00"}, "days: empty"),
    ({"kind": "maybe"}, "windows[0].kind: must be 'allow' or 'deny'"),
    ({"bogus": 1}, "windows[0].bogus: unknown key"),
]


@pytest.mark.parametrize(("change", "needle"), BAD, ids=[n for _, n in BAD])
def test_a_bad_window_is_one_line_naming_the_place(
    tmp_path: Path, change: dict[str, Any], needle: str
) -> None:
    given = {k: v for k, v in {**WEEKEND, **change}.items() if v is not None}
    path = pipeline_file(tmp_path, windows=[given])
    with pytest.raises(BadInputError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: stages[1: qa]."), message
    assert needle in message, message


def test_unquoted_yaml_times_are_refused_not_misread(tmp_path: Path) -> None:
    path = pipeline_file(tmp_path)
    text = path.read_text().replace(
        "name: qa\n", "name: qa\n  windows: [{kind: allow, start: 10:00, end: '11:00'}]\n", 1
    )
    path.write_text(text)
    with pytest.raises(BadInputError, match=r"windows\[0\]\.start: write the time in quotes"):
        load(path)


def test_bad_on_window_and_first_stage_windows(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"on_window: must be 'wait' or 'refuse'"):
        load(pipeline_file(tmp_path, on_window="later"))
    stages = default_stages()
    stages[0]["windows"] = [WEEKEND]
    path = tmp_path / "first.yaml"
    path.write_text(
        yaml.safe_dump({"registries": {"local": {"url": "127.0.0.1:5000"}}, "stages": stages})
    )
    with pytest.raises(BadInputError, match="stage dev: the first stage cannot have windows"):
        load(path)
