"""Read a YAML (or JSON) configuration file strictly: UTF-8, one document, no duplicate keys.

PyYAML lets a repeated key silently win over the first (`fail_on: LOW` … `fail_on: CRITICAL`);
for policy files and pipeline.yaml a repeated key is a mistake to report, not to guess about.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from registry.errors import BadInputError

MAX_CONFIG_BYTES = 1024 * 1024


class _StrictLoader(yaml.SafeLoader):
    pass


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)  # resolves `<<: *anchor` merges first
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The top-level mapping of a YAML/JSON file; BadInputError (one line) for anything else."""
    return read_mapping_and_bytes(path, what)[0]


def read_mapping_and_bytes(path: str | Path, what: str) -> tuple[dict[str, Any], bytes]:
    """The mapping and the exact bytes it was read from (whose digest names the policy)."""
    name = f"{what} {path}"
    try:
        with Path(path).open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise BadInputError(f"{name}: cannot read it ({e.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise BadInputError(f"{name}: over {MAX_CONFIG_BYTES} bytes; is it the right file?")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInputError(f"{name}: not UTF-8 text") from None
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "not valid YAML or JSON"
        raise BadInputError(f"{name}: {problem}{at}") from None
    if doc is None:
        return {}, raw
    if not isinstance(doc, dict):
        raise BadInputError(f"{name}: expected a mapping of keys, got {type(doc).__name__}")
    return doc, raw
