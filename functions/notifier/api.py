"""HTTP shape of list_notifications: parse and validate the query, call the service, shape the response."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from functions.notifier.domain import Notification, parse_instant, rfc3339
from functions.notifier.service import NotifierService
from shared_lib import web


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown query parameter is a typo worth a 400

    user_id: str
    start: str = Field(alias="from")
    to: str


def _item(n: Notification) -> dict[str, str]:
    return {
        "order_id": str(n.order_id),
        "status": n.status,
        "message": n.message,
        "created_at": rfc3339(n.created_at),
    }


def list_notifications(service: NotifierService, call: web.Call) -> web.Reply:
    query = call.query_model(HistoryQuery)
    user_id = web.parse_id(query.user_id, "user_id")
    start = parse_instant(query.start, "from")
    end = parse_instant(query.to, "to")
    notifications, hit = service.history_of(user_id, start, end)
    body = {"user_id": str(user_id), "items": [_item(n) for n in notifications]}
    return web.Reply(200, body, {"X-Cache": "hit" if hit else "miss"})
