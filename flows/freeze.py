"""The stop switch (#16): `airlock freeze STAGE --reason TEXT` refuses every promotion into STAGE,
saying why, until `airlock unfreeze STAGE`.

The switch is a Prefect variable, `airlock_freeze_<stage>`, so every process that promotes — the
CLI, `airlock serve`, each worker — reads the same one from the server. A hop looks at it before
its gates (nobody is asked to approve into a frozen stage) and again under the target
repository's lock, just before it copies (flows/landing.py): a run started, or approved, before
the freeze never lands after it. Any value under the name freezes the stage — one that is not
airlock's own shape too (fail closed). Rollbacks are not stopped: they are how a frozen stage is
repaired.

Windows (pipeline.yaml `windows:`, flows/windows.py) close a stage at times instead: a promotion
waits for them to open — or is refused, with `on_window: refuse` — before its gates and again
before it lands.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from flows import windows
from flows.config import Stage
from flows.hops import PromotionRefused

MAX_REASON = 500
MAX_WAIT = dt.timedelta(days=7)  # a run waits for a window at most this long (it holds a worker)


@dataclass(frozen=True)
class Freeze:
    stage: str
    reason: str
    by: str
    since: str

    def refusal(self) -> str:
        return (
            f"{self.stage}: frozen by {self.by} since {self.since}: {self.reason} (promotions"
            f" into {self.stage} are refused until `airlock unfreeze {self.stage}`)"
        )


def variable(stage: str) -> str:
    return f"airlock_freeze_{stage}"


async def frozen(stage: str) -> Freeze | None:
    """The stage's freeze, or None. An unreadable variable is an error, never "not frozen"."""
    from prefect.variables import Variable

    value: Any = await Variable.aget(variable(stage), default=None)
    if value is None:
        return None
    if not isinstance(value, dict):
        return Freeze(stage, str(value)[:MAX_REASON] or "(no reason given)", "someone", "?")
    return Freeze(
        stage,
        str(value.get("reason") or "(no reason given)")[:MAX_REASON],
        str(value.get("by") or "someone"),
        str(value.get("since") or "?"),
    )


async def refuse_if_frozen(stage: str) -> None:
    if (found := await frozen(stage)) is not None:
        raise PromotionRefused(found.refusal())


async def freeze(stage: str, reason: str, by: str) -> Freeze:
    from prefect.variables import Variable

    since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    value = {"reason": reason, "by": by, "since": since}
    await Variable.aset(variable(stage), value, overwrite=True)
    return Freeze(stage, reason, by, since)


async def unfreeze(stage: str) -> bool:
    """Lift the stage's freeze; False when it was not frozen."""
    from prefect.variables import Variable

    return await Variable.aunset(variable(stage))


# ---------------------------------------------------------------------------- windows


async def wait_for_window(
    stage: Stage, announce: Callable[[str], Awaitable[None]] | None = None
) -> None:
    """Hold a promotion while the stage's windows (flows/windows.py) close it — or refuse it,
    with `on_window: refuse` or when they never open. Waiting is a sleep in the run: its state
    stays Running, its log (and `announce`, e.g. the stage board) says until when, and it holds
    its worker slot meanwhile."""
    from prefect import get_run_logger

    while True:
        now = dt.datetime.now(dt.UTC)
        if (closed := _closed(stage, now)) is None:
            return
        opens, why = closed
        if opens - now > MAX_WAIT:
            raise PromotionRefused(
                f"{stage.name}: {why}, more than {MAX_WAIT.days} days away; promote again nearer"
                " the time (a run never waits longer)"
            )
        if stage.on_window == "refuse":
            raise PromotionRefused(
                f"{stage.name}: {why} (on_window: refuse); promote again once it opens"
            )
        get_run_logger().info("%s: %s: waiting", stage.name, why)
        if announce is not None:
            await announce(f"waiting: {why}")
        await asyncio.sleep(max(0.0, (opens - now).total_seconds()))


def refuse_if_window_closed(stage: Stage) -> None:
    """Under a repository's lock, where nobody waits: a promotion that waited for the lock into
    a window that has closed meanwhile is refused, and lands nothing."""
    if (closed := _closed(stage, dt.datetime.now(dt.UTC))) is not None:
        raise PromotionRefused(
            f"{stage.name}: {closed[1]} (it closed while this promotion waited for its lock);"
            " promote again once it opens"
        )


def _closed(stage: Stage, now: dt.datetime) -> tuple[dt.datetime, str] | None:
    """None while the stage's windows let a promotion land; else when they open and why not
    now. Windows that never open refuse."""
    try:
        opens = windows.opens_at(stage.windows, now)
    except windows.NeverOpen as e:
        raise PromotionRefused(f"{stage.name}: {e}") from None
    if opens is None:
        return None
    return opens, windows.blocked_line(stage.windows, now) or f"closed until {opens.isoformat()}"


async def stage_notes(stage: Stage) -> list[str]:
    """What a reviewer should know of the stage itself: its windows and its stop switch."""
    notes = [f"window: {windows.describe(w)}" for w in stage.windows]
    if stage.windows:
        waits = "is refused" if stage.on_window == "refuse" else "waits"
        notes.append(f"outside its windows a promotion {waits}")
    stopped = await frozen(stage.name)
    notes.append(
        stopped.refusal()
        if stopped
        else f"not frozen (`airlock freeze {stage.name}` would stop it)"
    )
    return notes
