"""The stop switch and windows (#16): `airlock freeze STAGE --reason TEXT` refuses promotions into
STAGE with its reason until `airlock unfreeze STAGE` — for one hop, for a batch, and for a run that
was already waiting for approval when the stage froze (the attack: approve after the freeze). A
deny window holds a promotion until it ends (or refuses it, `on_window: refuse`), and the
approval request shows the stage's windows and switch. The window arithmetic itself is in
test_windows.py."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from flows.approvals import read_request
from flows.freeze import variable
from flows.promote import BOARD_KEY, promote
from tests.flows.helpers import (
    Setup,
    alongside,
    attach_evidence,
    promote_runs,
    push_with_evidence,
    wait_for_approval_request,
)
from tests.support.artifacts import artifacts, table
from tests.support.cli import assert_one_line_error, assert_refusal, run_cli

BERLIN = ZoneInfo("Europe/Berlin")
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("fast_approval_polls")]


async def test_a_frozen_stage_refuses_with_its_reason_until_unfrozen(
    setup: Setup, cli_env: dict[str, str]
) -> None:
    img = await push_with_evidence(setup, "freeze-one")
    frozen = await run_cli(
        "freeze", "qa", "--reason", "incident 42: qa DB restore", "--by", "alice",
        "--pipeline", setup.file, env=cli_env,
    )  # fmt: skip
    assert frozen.returncode == 0, frozen.stderr
    assert frozen.stdout == "qa: frozen by alice: incident 42: qa DB restore\n"

    proc = await run_cli(
        "promote", setup.ref("dev"), "--to", "qa", "--pipeline", setup.file, env=cli_env
    )
    line = assert_refusal(proc, 1, "incident 42: qa DB restore")
    assert "qa: frozen by alice since" in line and "incident 42: qa DB restore" in line
    assert setup.digest("qa") is None

    lifted = await run_cli("unfreeze", "qa", "--pipeline", setup.file, env=cli_env)
    assert (lifted.returncode, lifted.stdout) == (0, "qa: unfrozen\n")
    again = await run_cli("unfreeze", "qa", "--pipeline", setup.file, env=cli_env)
    assert (again.returncode, again.stdout) == (0, "qa: was not frozen\n")
    proc = await run_cli(
        "promote", setup.ref("dev"), "--to", "qa", "--pipeline", setup.file, env=cli_env
    )
    assert proc.returncode == 0, proc.stderr
    assert setup.digest("qa") == img.digest


async def test_a_batch_into_a_frozen_stage_stops_every_image_before_it(
    setup: Setup, cli_env: dict[str, str]
) -> None:
    await push_with_evidence(setup, "freeze-batch-a")
    other = setup.push("freeze-batch-b", name="api")
    await attach_evidence(setup.reg, other, repo="dev/api")
    await run_cli(
        "freeze", "staging", "--reason", "release train", "--pipeline", setup.file, env=cli_env
    )
    proc = await run_cli(
        "pipeline", setup.ref("dev"), setup.ref("dev", name="api"), "--until", "staging",
        "--pipeline", setup.file, env=cli_env,
    )  # fmt: skip
    # the pipeline prints where every image got to on stdout, and refuses in one error line
    errors = [line for line in proc.stderr.splitlines() if line.startswith("airlock: error: ")]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert "release train" in errors[0] and "Traceback" not in proc.stderr
    assert setup.digest("qa", name="api") == other.digest  # qa is not frozen
    assert setup.digest("staging") is None and setup.digest("staging", name="api") is None


async def test_an_approval_given_after_the_freeze_does_not_land(
    setup: Setup, cli_env: dict[str, str]
) -> None:
    """The request was made before the freeze; the approver answers after it. The hop looks at
    the switch again under the repository's lock, so nothing moves."""
    from flows.hops import PromotionRefused

    await push_with_evidence(setup, "freeze-approval")
    for stage in ("qa", "staging"):
        await promote(image=setup.ref("dev" if stage == "qa" else "qa"), to_stage=stage)
    started = dt.datetime.now(dt.UTC)

    async def freeze_then_approve() -> None:
        run = await wait_for_approval_request(
            promote_runs(setup.ref("staging"), "prod"), since=started
        )
        frozen = await run_cli(
            "freeze", "prod", "--reason", "change freeze", "--pipeline", setup.file, env=cli_env
        )
        assert frozen.returncode == 0, frozen.stderr
        approved = await run_cli("approve", str(run.id), "--by", "alice", env=cli_env)
        assert approved.returncode == 0, approved.stderr

    with pytest.raises(PromotionRefused, match=r"prod: frozen by .* change freeze"):
        await alongside(
            promote(image=setup.ref("staging"), to_stage="prod", requester="ci"),
            freeze_then_approve(),
        )
    assert setup.digest("prod") is None
    assert await setup.history("prod") == []


async def test_any_value_under_the_switch_freezes_the_stage(
    setup: Setup, cli_env: dict[str, str]
) -> None:
    """Set by hand in the UI, not in airlock's shape: still frozen (fail closed)."""
    from prefect.variables import Variable

    await push_with_evidence(setup, "freeze-odd")
    await Variable.aset(variable("qa"), "no promotions today", overwrite=True)
    proc = await run_cli(
        "promote", setup.ref("dev"), "--to", "qa", "--pipeline", setup.file, env=cli_env
    )
    assert_refusal(proc, 1, "no promotions today")
    assert setup.digest("qa") is None


async def test_freeze_bad_input(setup: Setup, cli_env: dict[str, str]) -> None:
    for args, needle in [
        (("freeze", "uat", "--reason", "x"), "unknown stage 'uat'; stages: dev, qa"),
        (("freeze", "qa", "--reason", "   "), "say why"),
        (("freeze", "qa", "--reason", "x" * 501), "say why"),
        (("unfreeze", "uat"), "unknown stage 'uat'; stages: dev, qa"),
    ]:
        proc = await run_cli(*args, "--pipeline", setup.file, env=cli_env)
        assert_one_line_error(proc, 2, needle)


def _clock(t: dt.datetime) -> str:
    return t.strftime("%H:%M:%S")


async def test_a_deny_window_holds_a_promotion_until_it_ends(setup: Setup) -> None:
    """A short deny window (a few seconds, as a time range) that has begun: the hop starts, waits
    for the window's end, then lands."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    end = now + dt.timedelta(seconds=4)
    window = {"kind": "deny", "start": _clock(now), "end": _clock(end), "timezone": "UTC"}
    setup.write(qa={"windows": [window]})
    img = await push_with_evidence(setup, "window-held")
    done = await promote(image=setup.ref("dev"), to_stage="qa")
    assert done["status"] == "promoted" and setup.digest("qa") == img.digest
    [record] = [r for r in await setup.records("qa", img.digest) if r.stage == "qa"]
    assert record.started_at < end <= record.finished_at  # started inside, landed after
    # meanwhile the stage board said so (its earlier version: the row now says promoted)
    said = [row["status"] for board in await artifacts(key=BOARD_KEY) for row in table(board)
            if (row["image"], row["stage"]) == ("app", "qa")]  # fmt: skip
    assert said[0] == "promoted"
    assert any(s.startswith("waiting: inside deny window") for s in said[1:]), said


async def test_a_window_that_refuses_names_itself_and_when_it_opens(
    setup: Setup, cli_env: dict[str, str]
) -> None:
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    start, end = now.astimezone(BERLIN), (now + dt.timedelta(hours=1)).astimezone(BERLIN)
    window = {"kind": "deny", "start": start.strftime("%H:%M"), "end": end.strftime("%H:%M"),
              "timezone": "Europe/Berlin"}  # fmt: skip
    setup.write(qa={"windows": [window], "on_window": "refuse"})
    await push_with_evidence(setup, "window-refused")
    proc = await run_cli(
        "promote", setup.ref("dev"), "--to", "qa", "--pipeline", setup.file, env=cli_env
    )
    line = assert_refusal(proc, 1, "on_window: refuse")
    shown = f"{start:%H:%M}-{end:%H:%M} (Europe/Berlin) until {end.isoformat()}"
    assert f"qa: inside deny window {shown}" in line, line
    assert setup.digest("qa") is None


async def test_windows_that_never_open_refuse_even_where_promotions_wait(setup: Setup) -> None:
    from flows.hops import PromotionRefused

    always = {"kind": "deny", "cron": "* * * * *", "duration": "2m"}
    setup.write(qa={"windows": [always]})
    await push_with_evidence(setup, "window-never")
    with pytest.raises(PromotionRefused, match=r"qa: the windows leave no time"):
        await promote(image=setup.ref("dev"), to_stage="qa")
    assert setup.digest("qa") is None


async def test_the_approval_request_shows_the_stages_windows_and_switch(
    setup: Setup, cli_env: dict[str, str]
) -> None:
    whole_day = {"kind": "allow", "start": "00:00", "end": "00:00", "timezone": "UTC"}
    setup.write(prod={"windows": [whole_day]})
    await push_with_evidence(setup, "window-request")
    for stage in ("qa", "staging"):
        await promote(image=setup.ref("dev" if stage == "qa" else "qa"), to_stage=stage)
    started = dt.datetime.now(dt.UTC)
    seen: list[str] = []

    async def read_then_approve() -> None:
        run = await wait_for_approval_request(
            promote_runs(setup.ref("staging"), "prod"), since=started
        )
        request = await read_request(run.id)
        assert request is not None
        seen.extend(request["stage_notes"])
        approved = await run_cli("approve", str(run.id), "--by", "alice", env=cli_env)
        assert approved.returncode == 0, approved.stderr

    done = await alongside(
        promote(image=setup.ref("staging"), to_stage="prod", requester="ci"), read_then_approve()
    )
    assert done["status"] == "promoted"
    assert seen == [
        "window: allow 00:00-00:00 (UTC)",
        "outside its windows a promotion waits",
        "not frozen (`airlock freeze prod` would stop it)",
    ]
