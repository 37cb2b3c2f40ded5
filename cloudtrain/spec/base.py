"""The spec models' shared base and their error type, apart so that each section's module can use them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown fields are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldError(ValueError):
    """A validator's error about a sub-field, so the reported location points at it.

    `field` is dotted (`spot.max_wait`) or a tuple of keys, for keys that may hold a dot (data channels).
    """

    def __init__(self, field: str | tuple[str, ...], message: str) -> None:
        self.field = field
        super().__init__(message)

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.field.split(".")) if isinstance(self.field, str) else self.field
