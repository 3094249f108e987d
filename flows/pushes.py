"""Push events: how airlock knows when an image arrived in the pipeline's first stage.

The webhook receiver turns each tagged push the registry reports into an `airlock.image.pushed`
event (webhooks/events.py builds it). The time the Prefect server *received* the first such event
for a digest is when that digest entered the first stage: the server sets it, so neither the
pusher nor the image can (an image config's `created` is whatever the build wrote — 1970 in every
reproducible build). Events are kept as long as the server's event retention (7 days by default).
"""

from __future__ import annotations

import datetime as dt

from registry.reference import Reference

EVENT = "airlock.image.pushed"


def resource_id(repository: Reference) -> str:
    """The resource a push event names: the repository, registry host included."""
    return f"airlock.image.{repository.name}"


async def first_received(repository: Reference, digest: str) -> dt.datetime | None:
    """When the Prefect server first received a push event of `digest` into `repository`, or
    None if it never did (no receiver, or the event is older than the server's retention)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOrder,
        EventResourceFilter,
    )
    from prefect.events.schemas.events import ResourceSpecification

    query = EventFilter(
        order=EventOrder.ASC,  # the first ones: a digest re-tagged many times has many events
        event=EventNameFilter(name=[EVENT]),
        resource=EventResourceFilter(
            id=[resource_id(repository)],
            labels=ResourceSpecification({"airlock.digest": digest}),
        ),
    )
    async with get_client() as client:
        page = await client.read_events(filter=query, limit=50)  # the server's maximum
    times = [e.received for e in page.events if e.resource.get("airlock.digest") == digest]
    return min(times, default=None)
