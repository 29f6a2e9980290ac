"""Every service's openapi.yaml against its real handlers, served by the dev server (schemathesis).

For each operation, schemathesis generates valid (positive) and invalid (negative) requests from the
document; every response must be one the document describes (status, content type, body schema) and
never a 5xx. The documents are the files in functions/<service>/openapi.yaml, which the services also serve.
Most valid cases are pointed at SKUs, carts and orders that exist (tests/contract/steering.py), and every
test runs with the suite's fixed seed: see tests/contract/README.md to replay or explore.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as with_seed
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation, BaseSchema

from functions import table
from tests.contract import steering

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = 40
# the same settings every run: no example database (the seed replays a run), a failing case's blob printed
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=False,
    print_blob=True,
)
HEADERS = {"product": {"X-API-KEY": "testToken"}}


def _documented(schema: BaseSchema) -> list[APIOperation[Any, Any, Any, Any]]:
    return [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]


def _operations() -> list[Any]:
    params = []
    for service in table.SERVICES:
        schema = steering.steer(schemathesis.openapi.from_path(ROOT / "functions" / service / "openapi.yaml"))
        for operation in _documented(schema):
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                params.append(
                    pytest.param(service, operation, mode, id=f"{service}:{operation.label}:{mode.value}")
                )
    return params


@pytest.mark.parametrize(("service", "operation", "mode"), _operations())
def test_handlers_conform_to_their_document(
    shop: dict[str, str], service: str, operation: Any, mode: GenerationMode, request: pytest.FixtureRequest
) -> None:
    @with_seed(steering.seed(request.config))
    @given(case=operation.as_strategy(generation_mode=mode))
    @SETTINGS
    def conforms(case: schemathesis.Case[Any]) -> None:
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
        documented = {(operation.method.upper(), operation.path) for operation in _documented(schema)}
        routed = {
            (f.method, f.path.replace(":id}", "}"))
            for f in table.functions_of(service)
            if f.trigger == "http"
        }
        assert routed == documented, service
