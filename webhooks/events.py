"""From what a registry or a CI job says to the Prefect events that start promotions.

A registry notification envelope (`application/vnd.docker.distribution.events.v1+json`) holds
events; a manifest push *with a tag* into the first stage of the pipeline is an image pushed, and
becomes one `airlock.image.pushed` event whose id is derived from the registry's event id (uuid5):
the registry delivers at least once, and the receiver (webhooks/seen.py) and Prefect drop an event
id already sent, so a redelivery never starts a second pipeline run. Everything else (blob pushes,
pulls, pushes by digest, airlock's own tags, release indexes, other repositories) is skipped,
never an error: the registry sends all of it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from flows.config import Pipeline
from flows.pushes import EVENT, resource_id
from flows.records import NOT_A_RELEASE
from flows.releases import is_release
from registry import mediatypes as mt
from registry.errors import BadInputError
from registry.reference import InvalidReference, Reference, is_digest, parse

# A fixed namespace: the same registry event id gives the same Prefect event id in any process.
NAMESPACE = uuid.UUID("6f1c1e0a-6a43-4a53-9d3e-3f2b8f5c7a10")


@dataclass(frozen=True)
class Push:
    """An image pushed under a tag into the pipeline's first stage."""

    reference: Reference  # registry/repository:tag@digest
    media_type: str
    source: str  # "registry" or "ci"
    delivery: str  # the sender's id for this delivery (what makes the event id)
    requester: str  # who pushed (the registry's authenticated actor) or who CI says asked

    @property
    def event_id(self) -> str:
        return str(uuid.uuid5(NAMESPACE, f"{self.source}:{self.delivery}"))

    def event(self, occurred: dt.datetime | None = None) -> dict[str, Any]:
        ref = self.reference
        return {
            "id": self.event_id,
            "occurred": (occurred or dt.datetime.now(dt.UTC)).isoformat(),
            "event": EVENT,
            "resource": {
                "prefect.resource.id": resource_id(ref),
                "prefect.resource.name": str(ref),
                "airlock.reference": str(ref),
                "airlock.repository": ref.repository,
                "airlock.tag": ref.tag or "",
                "airlock.digest": ref.digest or "",
                "airlock.source": self.source,
                "airlock.requester": self.requester,
            },
            "payload": {"media_type": self.media_type},
        }


def _first_stage(pipeline: Pipeline, ref: Reference) -> str | None:
    """The image name of `ref` when it is in the pipeline's first stage, else None."""
    try:
        stage, name = pipeline.locate(ref)
    except BadInputError:
        return None
    return name if stage is pipeline.stages[0] else None


def registry_pushes(envelope: Any, pipeline: Pipeline) -> tuple[list[Push], int, list[str]]:
    """The image pushes in a notification envelope, how many events were skipped, and why each
    skipped *manifest push* was (blob pushes and pulls are routine, not worth a word).

    Raises BadInputError for an envelope that is not one (the caller answers 400)."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("events"), list):
        raise BadInputError('not a notification envelope: expected {"events": [...]}')
    first = pipeline.stages[0]
    host = pipeline.registries[first.registry].url
    pushes: list[Push] = []
    notes: list[str] = []
    for i, event in enumerate(envelope["events"]):
        if not isinstance(event, dict):
            raise BadInputError(f"events[{i}] is not an object")
        target = event.get("target")
        if event.get("action") != "push" or not isinstance(target, dict):
            continue
        media_type, tag = target.get("mediaType"), target.get("tag")
        if media_type not in mt.MANIFESTS:
            continue
        event_id, digest, repo = event.get("id"), target.get("digest"), target.get("repository")
        if not (isinstance(event_id, str) and event_id and isinstance(repo, str)):
            raise BadInputError(f"events[{i}]: a push without an id or repository")
        if not is_digest(digest):
            raise BadInputError(f"events[{i}]: target.digest is not a sha256 digest (or sha512)")
        if not tag:
            notes.append(f"{repo}@{digest}: pushed by digest, no tag (not a release)")
            continue
        if NOT_A_RELEASE.match(str(tag)):
            notes.append(f"{repo}:{tag}: referrer, signature or history tag (not a release)")
            continue
        try:
            ref = parse(f"{host}/{repo}:{tag}@{digest}")
        except InvalidReference as e:
            raise BadInputError(f"events[{i}]: {e}") from None
        image = _first_stage(pipeline, ref)
        if image is None:
            notes.append(f"{repo}:{tag}: not in the pipeline's first stage ({first.repository})")
            continue
        if is_release(image):
            notes.append(f"{repo}:{tag}: a release (airlock release create), not an image")
            continue
        actor = event.get("actor")
        name = actor.get("name") if isinstance(actor, dict) else None
        requester = name if isinstance(name, str) and name else "registry"
        pushes.append(Push(ref, media_type, "registry", event_id, requester))
    return pushes, len(envelope["events"]) - len(pushes), notes


def ci_push(body: Any, pipeline: Pipeline, delivery: str) -> Push:
    """The image a CI job names in the first stage:
    {"image": "REGISTRY/REPOSITORY:TAG[@DIGEST]", "timestamp": UNIX_SECONDS (see ci_timestamp),
     "requester": "NAME" (default "ci"),
     "id": "…" (optional: a build id; a new one makes the same image a new event)}.

    Raises BadInputError (400) for a body that names none, or an image outside the first stage."""
    if not isinstance(body, dict) or not isinstance(body.get("image"), str):
        raise BadInputError('expected a JSON object {"image": "REGISTRY/REPOSITORY:TAG"}')
    try:
        ref = parse(body["image"], default_tag=None)
    except InvalidReference as e:
        raise BadInputError(str(e)) from None
    if ref.tag is None:
        raise BadInputError(f"{ref}: name the image by its tag (stages' tags are made from it)")
    image = _first_stage(pipeline, ref)
    if image is None:
        first = pipeline.stages[0]
        where = f"{pipeline.registries[first.registry].url}/{first.repository}"
        raise BadInputError(f"{ref.name} is not in the pipeline's first stage ({where})")
    if is_release(image):
        raise BadInputError(
            f"{ref.name} is a release: promote it with `airlock pipeline` or a run of the"
            " promote deployment (push events start an image's promotions only)"
        )
    if "id" in body and not (isinstance(body["id"], str) and 0 < len(body["id"]) <= 200):
        raise BadInputError("id, when given, must be a string of 1-200 characters")
    requester = body.get("requester", "ci")
    if not isinstance(requester, str) or not requester.strip() or len(requester) > 200:
        raise BadInputError("requester must be a non-empty name (at most 200 characters)")
    return Push(ref, "", "ci", delivery, requester.strip())


def ci_timestamp(body: dict[str, Any], now: float, max_age: float, skew: float) -> None:
    """A CI call must say when it was made, in its signed body: "timestamp", whole seconds since
    the epoch (`date +%s`), at most `max_age` seconds old and `skew` seconds ahead. A captured
    call replayed later is refused; within the window it is the same event (dropped as sent).

    Raises BadInputError otherwise, a missing timestamp included (fail closed)."""
    if "timestamp" not in body:
        raise BadInputError('no timestamp: add "timestamp": UNIX_SECONDS (`date +%s`) to the body')
    stamp = body["timestamp"]
    if isinstance(stamp, bool) or not isinstance(stamp, int):
        raise BadInputError("timestamp must be a whole number of seconds since the epoch")
    if stamp < now - max_age:
        raise BadInputError(f"timestamp is older than {max_age:.0f} s: a new call needs a new one")
    if stamp > now + skew:
        raise BadInputError(f"timestamp is {stamp - now:.0f} s in the future: check CI's clock")
