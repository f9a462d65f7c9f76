"""The OpenAPI schema as clients see the API: every error body is {"detail": "<what is wrong>"} (shared/API.md)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

# FastAPI documents its own validation error (a list of objects); the app answers 422 like every other error.
ERROR_SCHEMA: dict[str, Any] = {
    "title": "HTTPValidationError",
    "type": "object",
    "properties": {"detail": {"type": "string", "title": "Detail", "description": "what is wrong, for a person"}},
    "required": ["detail"],
}


def describe_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace FastAPI's validation-error model in `schema` with the app's own error body; returns the schema."""
    components = schema.get("components", {}).get("schemas", {})
    if "HTTPValidationError" in components:
        components["HTTPValidationError"] = dict(ERROR_SCHEMA)
        if "ValidationError" in components and '"#/components/schemas/ValidationError"' not in json.dumps(schema):
            del components["ValidationError"]
    return schema


def install(app: FastAPI) -> None:
    """Make app.openapi() (and /openapi.json, /docs) describe the error bodies the app really sends."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe_errors(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
