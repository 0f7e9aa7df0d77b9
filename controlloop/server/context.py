"""What every route needs: the store, the mode, the metrics and OpenAPI body schemas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from controlloop.server.errors import ApiError
from controlloop.server.limits import Limits, Slots
from controlloop.server.metrics import ApiMetrics
from controlloop.server.state import Store

REF_TEMPLATE = "#/components/schemas/{model}"


@dataclass
class ApiContext:
    store: Store
    stateful: bool
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    # Schemas referenced by request bodies; merged into the OpenAPI components.
    schemas: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    slots: Slots = field(init=False)

    def __post_init__(self) -> None:
        self.slots = Slots(self.limits.max_concurrent)

    def require_stateful(self, verb: str) -> None:
        if not self.stateful:
            raise ApiError(
                409,
                f"{verb} changes the stored system, which only exists in stateful mode; "
                "start the server with `controlloop serve --stateful`",
            )

    def body(self, model: type[BaseModel] | dict[str, Any], *, required: bool = True) -> dict:
        """``openapi_extra`` documenting a JSON body of ``model`` (validated by hand)."""
        if isinstance(model, dict):
            schema = model
        else:
            schema = model.model_json_schema(by_alias=True, ref_template=REF_TEMPLATE)
            self.schemas.update(schema.pop("$defs", {}))
        return {
            "requestBody": {
                "required": required,
                "content": {"application/json": {"schema": schema}},
            }
        }
