"""shared_lib.docs: /openapi.json, /openapi.yaml and /docs answered in front of any WSGI app, everything else
passed through; the UI's files come from this process, never from elsewhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from werkzeug.test import Client
from werkzeug.wrappers import Response

from functions import table
from shared_lib.docs import DocsRoutes

ROOT = Path(__file__).resolve().parents[2]


def inner(environ: dict[str, Any], start_response: Any) -> Any:
    return Response("inner " + environ["PATH_INFO"], 200)(environ, start_response)


def client(service: str = "orders") -> Client:
    return Client(DocsRoutes(inner, ROOT / "functions" / service / "openapi.yaml"))


@pytest.mark.parametrize(
    "service", [s for s in table.SERVICES if (ROOT / "functions" / s / "openapi.yaml").exists()]
)
def test_every_service_document_is_served_as_json_and_yaml(service: str) -> None:
    expected = yaml.safe_load((ROOT / "functions" / service / "openapi.yaml").read_text("utf-8"))
    c = client(service)
    as_json = c.get("/openapi.json")
    assert (as_json.status_code, as_json.mimetype) == (200, "application/json")
    assert json.loads(as_json.get_data()) == expected
    as_yaml = c.get("/openapi.yaml")
    assert (as_yaml.status_code, as_yaml.mimetype) == (200, "application/yaml")
    assert yaml.safe_load(as_yaml.get_data()) == expected
    page = c.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"


def test_the_ui_is_swagger_served_from_here_with_no_outside_address() -> None:
    c = client()
    page = c.get("/docs").get_data(as_text=True)
    assert "/docs/static/swagger-ui-bundle.js" in page and "/openapi.json" in page
    assert "http://" not in page and "https://" not in page
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js"):
        response = c.get(f"/docs/static/{asset}")
        assert response.status_code == 200 and len(response.get_data()) > 1000, asset
    assert c.get("/docs/static/../../etc/passwd").status_code == 404
    assert c.get("/docs/static/index.html").status_code == 404  # only the assets the page uses


def test_other_paths_and_a_missing_document_pass_through() -> None:
    assert client().get("/order/x").get_data(as_text=True) == "inner /order/x"
    missing = Client(DocsRoutes(inner, ROOT / "no-such-openapi.yaml"))
    assert missing.get("/docs").get_data(as_text=True) == "inner /docs"


def test_a_write_to_a_docs_path_is_405_with_allow() -> None:
    response = client().post("/openapi.json")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"
    assert response.json == {"code": 3, "message": "method not allowed; allowed: GET", "details": []}
