"""The floor every benchmark is compared with: a bare functions-framework HTTP target.

Served by bench.floor exactly as the shop's functions are served (gunicorn's worker of SHOP_WORKER_CLASS,
the same workers and threads), it costs what functions-framework, Flask and the server cost and nothing of
the shop's.
"""

from __future__ import annotations

import flask


def bare(request: flask.Request) -> str:
    return "ok"
