"""Signed approvals on a real Prefect server: prod's approver is declared with a key, so the
name typed into the Resume form (or given to `airlock approve`) proves nothing by itself. The
attacks first — the CLI without a key, the CLI with someone else's key, the form without a
signature — then the two signed paths people use: the CLI signs and sends, or prints the
signature for the Resume form's field."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from flows.promote import promote
from gates.keys import generate, read_public_key
from tests.flows.helpers import (
    Setup,
    alongside,
    promote_runs,
    push_with_evidence,
    wait_for_approval_request,
)
from tests.support.cli import assert_one_line_error, run_cli

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("fast_approval_polls")]


@pytest.fixture
def keyed(setup: Setup) -> Setup:
    """prod needs 1 approval from alice, who signs with an OpenSSH key made by ssh-keygen."""
    keys = setup.path.parent / "keys"
    keys.mkdir()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "alice")], check=True
    )
    private, _ = generate()
    (keys / "mallory").write_bytes(private)
    approval = {"required": 1, "approvers": [{"name": "alice", "key": "keys/alice.pub"}]}
    setup.write(gates={"prod": [{"kind": "approval", "policy": approval, "timeout": "60s"}]})
    return setup


async def test_only_alices_signature_makes_alices_approval_count(
    keyed: Setup, prefect_api: str
) -> None:
    env = {"PREFECT_API_URL": prefect_api}
    keys = keyed.path.parent / "keys"
    img = await push_with_evidence(keyed, "signed-approval")
    await promote(image=keyed.ref("dev"), to_stage="qa")
    await promote(image=keyed.ref("qa"), to_stage="staging")
    started = dt.datetime.now(dt.UTC)
    seen: set[UUID] = set()
    said: dict[str, Any] = {}

    async def people() -> None:
        from prefect.flow_runs import resume_flow_run

        from flows.approvals import read_request

        match = promote_runs(keyed.ref("staging"), "prod")
        run = await wait_for_approval_request(match, since=started, seen=seen)
        rid = str(run.id)
        # the CLI without a key, and with mallory's key: judged as the run will, nothing sent
        said["unsigned"] = await run_cli("approve", rid, "--by", "alice", env=env)
        forged = ("approve", rid, "--by", "alice", "--key", str(keys / "mallory"))
        said["forged"] = await run_cli(*forged, env=env)
        # the Resume form without a signature (what anyone who can reach the UI can send)
        request = await read_request(run.id)
        assert request is not None
        said["request"] = request
        form = {"decision": "approve", "approver": "alice", "digest": request["digest"]}
        await resume_flow_run(run.id, run_input=form)
        # alice prints her signature and pastes it into the form's signature field
        run = await wait_for_approval_request(match, since=started, seen=seen)
        printed = ("approve", rid, "--by", "alice", "--key", str(keys / "alice"))
        said["printed"] = await run_cli(*printed, "--print-signature", env=env)
        assert said["printed"].returncode == 0, said["printed"].stderr
        signature = said["printed"].stdout.strip()
        await resume_flow_run(run.id, run_input={**form, "signature": signature})

    done = await alongside(
        promote(image=keyed.ref("staging"), to_stage="prod", requester="ci"), people()
    )

    assert_one_line_error(said["unsigned"], 1, "would not count", "unsigned")
    assert_one_line_error(said["forged"], 1, "would not count", "not by alice's key")
    assert said["printed"].stderr == "" and len(said["printed"].stdout.splitlines()) == 1
    # the request says who signs, with the key the run checks against
    alice = read_public_key(keys / "alice.pub")
    assert said["request"]["approver_keys"] == {"alice": alice.pem()}
    assert said["request"]["approval_run"]

    assert done["status"] == "promoted" and keyed.digest("prod") == img.digest
    [record] = await keyed.history("prod")
    unsigned, signed = record.approvals
    assert unsigned.not_counted and unsigned.not_counted.startswith("unsigned")
    assert unsigned.signed_by is None
    assert signed.not_counted is None and signed.signed_by == alice.short_id
    assert record.gates[-1].summary == "approved by alice (1 of 1 required; signed)"


async def test_a_bad_approver_key_in_the_pipeline_is_said_at_load(setup: Setup) -> None:
    approval = {"approvers": [{"name": "alice", "key": "keys/nobody.pub"}]}
    setup.write(gates={"prod": [{"kind": "approval", "policy": approval}]})
    proc = await run_cli("plan", setup.ref("dev"), "--to", "qa", "--pipeline", setup.file, env={})
    assert_one_line_error(proc, 2, "stage prod", "approver alice's key")


def test_the_key_file_path_is_relative_to_the_pipeline(tmp_path: Path) -> None:
    """A policy reads keys from the pipeline's folder, wherever the process runs."""
    from gates.approval import ApprovalPolicy

    _, public = generate()
    (tmp_path / "alice.pub").write_bytes(public)
    policy = ApprovalPolicy(approvers=[{"name": "Alice", "key": "alice.pub"}])
    assert policy.public_keys(tmp_path) == {"alice": read_public_key(tmp_path / "alice.pub")}
