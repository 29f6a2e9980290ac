"""HTTP shape of the order viewer: get_order (JSON, through the cache) and order_page (the web page).

The page is one self-contained file (static/order_page.html: HTML, CSS and JS inline, no build step, nothing
fetched from elsewhere); this module fills in the recent orders and where to fetch orders from.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import flask

from functions.orders.domain import OrderSummary, parse_uid, rfc3339
from functions.orders.service import OrdersService
from shared_lib import web

log = logging.getLogger(__name__)

PAGE = Path(__file__).resolve().parent / "static" / "order_page.html"
_CONFIG_MARK = "{/*PAGE-CONFIG*/}"
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # inline code is the page's own; it may fetch from its origin or the configured API, nothing else
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline';"
    " img-src data:; connect-src *; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}


# X-Cache: hit when a cache answered (this process's or Memcached), miss when the database did.
# A public read: the page may be served from another origin (its own Knative Service in the cluster).
# Made once: a reply's headers are only read.
_FOUND_HEADERS = {
    True: MappingProxyType({"X-Cache": "hit", "Access-Control-Allow-Origin": "*"}),
    False: MappingProxyType({"X-Cache": "miss", "Access-Control-Allow-Origin": "*"}),
}


def get_order(service: OrdersService, call: web.Call) -> web.Reply:
    uid = parse_uid(call.text("order_uid"))
    body, hit = service.get(uid)  # the JSON as cached, sent as it is
    return web.Reply(200, body, _FOUND_HEADERS[hit])


@functools.cache
def _template() -> str:
    return PAGE.read_text("utf-8")


def _summary(s: OrderSummary) -> dict[str, object]:
    return {
        "order_uid": s.order_uid,
        "date_created": rfc3339(s.date_created),
        "amount": s.amount,
        "currency": s.currency,
        "items": s.items,
    }


def render_page(recent: list[OrderSummary], api_url: str) -> str:
    config = {"apiUrl": api_url.rstrip("/"), "recent": [_summary(s) for s in recent]}
    # inside a <script>: no "</script>" can be smuggled in through a stored value
    text = json.dumps(config, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
    return _template().replace(_CONFIG_MARK, text)


def order_page(
    request: flask.Request, route: web.Route, service: Callable[[], OrdersService], api_url: Callable[[], str]
) -> flask.Response:
    if not route.matches(request.path):
        return web.to_flask(web.error_reply(web.RouteNotFoundError(f"no route for {request.path}")))
    if request.method not in ("GET", "HEAD"):
        return web.to_flask(web.error_reply(web.MethodNotAllowedError([route.method])))
    try:
        recent = service().recent()
    except Exception as exc:  # the page must render without its list: the lookup may still work
        log.warning("the recent orders are not available for the page: %r", exc)
        recent = []
    html = render_page(recent, api_url())
    return flask.Response(html, 200, content_type="text/html; charset=utf-8", headers=PAGE_HEADERS)
