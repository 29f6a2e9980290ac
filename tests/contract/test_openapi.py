"""Every service's openapi.yaml against its real handlers, served by the dev server (schemathesis).

For each operation, schemathesis generates valid (positive) and invalid (negative) requests from the
document; every response must be one the document describes (status, content type, body schema) and
never a 5xx. The documents are the files in functions/<service>/openapi.yaml, which the services also serve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from functions import table

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = 40
HEADERS = {"product": {"X-API-KEY": "testToken"}}


def _operations() -> list[Any]:
    params = []
    for service in table.SERVICES:
        schema = schemathesis.openapi.from_path(ROOT / "functions" / service / "openapi.yaml")
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                params.append(
                    pytest.param(service, operation, mode, id=f"{service}:{operation.label}:{mode.value}")
                )
    return params


@pytest.mark.parametrize(("service", "operation", "mode"), _operations())
def test_handlers_conform_to_their_document(
    shop: dict[str, str], service: str, operation: Any, mode: GenerationMode
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def conforms(case: schemathesis.Case) -> None:
        # A schema-valid request may still be refused by the business rules (an unpaid order cannot be
        # cancelled twice…), so "positive data must be accepted" does not apply; every other check does.
        case.call_and_validate(
            base_url=shop[service],
            # valid cases get the real key; an invalid case is sent as generated, or a negated (missing or
            # malformed) key would be put back and the request would rightly be accepted
            headers=HEADERS.get(service) if mode is GenerationMode.POSITIVE else None,
            excluded_checks=[schemathesis.checks.positive_data_acceptance],
        )

    conforms()


def test_every_http_function_is_documented() -> None:
    for service in table.SERVICES:
        schema = schemathesis.openapi.from_path(ROOT / "functions" / service / "openapi.yaml")
        documented = {(r.ok().method.upper(), r.ok().path) for r in schema.get_all_operations()}
        routed = {
            (f.method, f.path.replace(":id}", "}"))
            for f in table.functions_of(service)
            if f.trigger == "http"
        }
        assert routed == documented, service
