"""Prefect artifacts as the tests read them back (through this process's Prefect client)."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID


async def artifacts(flow_run_id: str | None = None, key: str | None = None) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    kw: dict[str, Any] = {}
    if flow_run_id:
        kw["flow_run_id"] = ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])
    if key:
        kw["key"] = ArtifactFilterKey(any_=[key])
    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(**kw), sort=ArtifactSort.CREATED_DESC
        )


def table(artifact: Any) -> list[dict[str, Any]]:
    data = artifact.data
    return json.loads(data) if isinstance(data, str) else data
