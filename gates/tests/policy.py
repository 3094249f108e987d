"""TestsPolicy: what a test report must show for the tests gate to pass.

How `required` entries match test ids in each format: docs/formats.md, "Test reports: ids and
required tests".
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from gates.base import ReportPolicy


class TestsPolicy(ReportPolicy):
    """What a test report must show for the gate to pass. Defaults: ≥ 1 test, no failures/errors."""

    __test__ = False  # not a pytest test class

    min_tests: int = Field(default=1, ge=0, description="zero tests is a failure by default")
    max_failed: int = Field(default=0, ge=0)
    max_errors: int = Field(default=0, ge=0)
    max_skipped_ratio: float | None = Field(
        default=None, ge=0, le=1, description="skipped (incl. xfailed) / total"
    )
    required: list[str] = Field(
        default_factory=list,
        description="test ids, or patterns with * and ?, that must be present and passed",
    )
    min_pass_rate: float | None = Field(
        default=None, ge=0, le=1, description="passed / (total - skipped)"
    )

    @field_validator(
        "min_tests", "max_failed", "max_errors", "max_skipped_ratio", "min_pass_rate", mode="before"
    )
    @classmethod
    def _no_bools(cls, value: Any) -> Any:
        # pydantic would read `max_failed: true` as 1; a policy file saying that is a mistake.
        if isinstance(value, bool):
            raise ValueError("must be a number, not true/false")
        return value

    @field_validator("required")
    @classmethod
    def _non_empty_ids(cls, value: list[str]) -> list[str]:
        if any(not item.strip() for item in value):
            raise ValueError("required test ids must be non-empty")
        return value
