"""The stop switch (#16): `airlock freeze STAGE --reason TEXT` refuses promotions into STAGE with
its reason until `airlock unfreeze STAGE` — for one hop, for a batch, and for a run that was
already waiting for approval when the stage froze (the attack: approve after the freeze)."""

from __future__ import annotations

import datetime as dt

import pytest

from flows.freeze import variable
from flows.promote import promote
from tests.flows.helpers import (
    Setup,
    alongside,
    attach_evidence,
    promote_runs,
    push_with_evidence,
    wait_for_approval_request,
)
from tests.support.cli import assert_one_line_error, assert_refusal, run_cli

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
        (("freeze", "uat", "--reason", "x"), "uat"),
        (("freeze", "qa", "--reason", "   "), "say why"),
        (("freeze", "qa", "--reason", "x" * 501), "say why"),
        (("unfreeze", "uat"), "uat"),
    ]:
        proc = await run_cli(*args, "--pipeline", setup.file, env=cli_env)
        assert_one_line_error(proc, 2, needle)
