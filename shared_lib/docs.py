"""Every service's API docs: a WSGI middleware answering GET /openapi.json, /openapi.yaml and /docs (a
browsable Swagger UI) in front of any app, passing every other request through.

The UI is served from this process (the `swagger-ui-bundle` wheel's files under /docs/static/), never from a
CDN: the cluster and the dev machines have no way out. Nothing service-specific here: the spec path is the
caller's.
"""

from __future__ import annotations

import functools
import html
import json
import mimetypes
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

DOC_PATHS = ("/openapi.json", "/openapi.yaml", "/docs", "/docs/")
STATIC_PREFIX = "/docs/static/"
_METHOD_NOT_ALLOWED = json.dumps({"code": 3, "message": "method not allowed; allowed: GET", "details": []})
_ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png")

_SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · API docs</title>
<link rel="stylesheet" href="{base}/docs/static/swagger-ui.css">
<link rel="icon" type="image/png" href="{base}/docs/static/favicon-32x32.png">
<style>body {{ margin: 0; background: #fafafa; }} .topbar {{ display: none; }}</style>
</head>
<body>
<div id="swagger-ui"></div>
<script src="{base}/docs/static/swagger-ui-bundle.js"></script>
<script src="{base}/docs/static/swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: "{base}/openapi.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout"
}});
</script>
</body>
</html>
"""


class DocsRoutes:
    """GET (or HEAD) /openapi.json, /openapi.yaml, /docs and /docs/static/* answered here; all else → `app`.

    The document is read once, when first asked for; a missing file leaves every path to `app`.
    """

    def __init__(self, app: WSGIApp, spec_path: Path | str) -> None:
        self.app = app
        self.spec_path = Path(spec_path)

    @functools.cached_property
    def spec(self) -> dict[str, Any] | None:
        if not self.spec_path.is_file():
            return None
        import yaml  # on the first docs request: a function's cold start does not pay for the YAML parser

        loaded = yaml.safe_load(self.spec_path.read_text("utf-8"))
        return loaded if isinstance(loaded, dict) else None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        ours = path in DOC_PATHS or path.startswith(STATIC_PREFIX)
        if not ours or self.spec is None:
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _reply(
                start_response,
                "405 METHOD NOT ALLOWED",
                "application/json",
                _METHOD_NOT_ALLOWED.encode(),
                [("Allow", "GET")],
            )
        base = environ.get("SCRIPT_NAME", "").rstrip("/")
        if path == "/openapi.json":
            body = json.dumps(self.spec, ensure_ascii=False).encode()
            return _reply(start_response, "200 OK", "application/json", body, head=method == "HEAD")
        if path == "/openapi.yaml":
            import yaml

            body = yaml.safe_dump(self.spec, allow_unicode=True, sort_keys=False).encode()
            return _reply(start_response, "200 OK", "application/yaml", body, head=method == "HEAD")
        if path.startswith(STATIC_PREFIX):
            name = path[len(STATIC_PREFIX) :]
            if name not in _ASSETS:
                body = json.dumps({"code": 5, "message": f"no such file {name}", "details": []}).encode()
                return _reply(start_response, "404 NOT FOUND", "application/json", body)
            kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
            return _reply(
                start_response,
                "200 OK",
                kind,
                _asset(name),
                [("Cache-Control", "public, max-age=86400")],
                head=method == "HEAD",
            )
        title = html.escape(str(self.spec.get("info", {}).get("title", "API")))
        page = _SWAGGER_PAGE.format(title=title, base=base)
        return _reply(
            start_response, "200 OK", "text/html; charset=utf-8", page.encode(), head=method == "HEAD"
        )


@functools.cache
def _asset(name: str) -> bytes:
    """One of the swagger-ui-bundle wheel's files (its module imported on the first asset asked for)."""
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped, unused-ignore]

    return (Path(str(swagger_ui_path)) / name).read_bytes()


def _reply(
    start_response: Callable[..., Any],
    status: str,
    content_type: str,
    body: bytes,
    extra: list[tuple[str, str]] | None = None,
    head: bool = False,
) -> list[bytes]:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *(extra or [])]
    start_response(status, headers)
    return [] if head else [body]
