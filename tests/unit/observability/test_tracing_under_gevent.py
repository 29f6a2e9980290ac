"""tracing.backend() under gevent as gunicorn's gevent workers run it: the module imported before the stdlib
is patched (the arbiter imports it; its worker patches after the fork), then several greenlets asking for the
backend at once (a worker's first concurrent requests). Each gets the one backend, and the hub never blocks:
building it starts the span processor's thread, which yields, and a lock the module made before the patch is
a native lock that blocks the whole hub when a second greenlet waits on it.

The scenario runs in a child process (monkey-patching is for a whole process), bounded: a hung hub is a
timeout, a failure."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from functions import entrypoint

SCENARIO = textwrap.dedent(
    """
    from shared_lib.observability import tracing  # before patching, as in gunicorn's arbiter

    from gevent import monkey

    monkey.patch_all()

    import gevent

    greenlets = [gevent.spawn(tracing.backend) for _ in range(4)]
    gevent.joinall(greenlets, timeout=30, raise_error=True)
    built = {id(g.value) for g in greenlets if g.successful()}
    print(len(built), type(tracing.backend()).__name__, sum(g.successful() for g in greenlets))
    tracing.backend().shutdown()
    """
)


def test_greenlets_asking_for_the_backend_at_once_get_the_one_backend_without_blocking_the_hub() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(entrypoint.ROOT),
        # nothing listens there; no span is ended, so nothing is sent either
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "SHOP_TRACE_SAMPLE_RATIO": "0.1",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCENARIO],
            env=env,
            cwd=entrypoint.ROOT,
            capture_output=True,
            text=True,
            timeout=60,  # the scenario takes about a second
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("the hub blocked: the greenlets never finished") from exc
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "OtelBackend", "4"]
