"""The container's entry point: serve the one function named by FUNCTION_TARGET (or --target) on PORT.

`python -m functions.entrypoint --target get_product` runs gunicorn (its gevent_pywsgi worker, or the one
SHOP_WORKER_CLASS names: gevent, gthread; functions.gevent_worker) around that function's
functions-framework app, answering GET /healthz (liveness) and GET /readyz (readiness) beside it. On SIGTERM
gunicorn stops accepting, drains the requests in flight (up to the graceful timeout), then each worker runs
the shutdown hooks registered in shared_lib.lifecycle (producer flush, pool close) before it exits.
Every function is served through shared_lib.observability.server: its requests counted, timed and traced,
GET /metrics (all workers' figures: with several workers they share a PROMETHEUS_MULTIPROC_DIR, made here
when not given) and the token-guarded GET /debug/profile.
Every answer is JSON, errors in the shop's shape: Flask's and functions-framework's error pages are replaced
(shared_lib.web.answer_http_errors_in_json), a body over MAX_REQUEST_BODY_BYTES is a 413 before any function
reads it, and what gunicorn refuses before the app (a 431 for headers over its limits, 414, 400) is written
as JSON by the worker (JsonErrorPages).
A cold start runs without the cyclic garbage collector until the app is built, then freezes what it built
(startup_done), and tells pydantic not to look for plugins. What only some requests need is imported when
first needed: trace exporters (shared_lib.observability.tracing), the docs' YAML (shared_lib.docs),
prometheus-client (on the first metric), the profiler's ctypes.
No service logic here: the function comes from the table, its code from functions/<service>/main.py.
"""

from __future__ import annotations

import gc
import os

if __name__ == "__main__":  # the container starting (`python -m functions.entrypoint`), not an import
    # Before the imports below, which build most of what a cold start builds (see startup_done).
    gc.disable()
    from shared_lib import lifecycle

    lifecycle.program_starting()  # no pydantic plugin scan (importing the table builds the first model)

import argparse
import http.client
import io
import re
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

from functions import table
from functions.server_settings import ServerSettings
from shared_lib import lifecycle, web
from shared_lib.docs import DOC_PATHS, DocsRoutes
from shared_lib.docs import STATIC_PREFIX as DOCS_STATIC_PREFIX
from shared_lib.observability import metrics, profiling, server
from shared_lib.observability import settings as observability_settings
from shared_lib.web import EscapedControlCharacters

ROOT = Path(__file__).resolve().parent.parent
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# What the image's ENTRYPOINT is; the target follows as `--target <name>` (container args in the manifests).
ENTRYPOINT: tuple[str, ...] = ("python", "-m", "functions.entrypoint")
HEALTH_PATHS = ("/healthz", "/readyz")
# OpenFaaS probes: faas-netes (CE) uses /_/health for liveness and readiness, Pro /_/ready: both answer as
# /readyz (503 once draining), so a draining pod leaves the gateway's endpoints
OPENFAAS_PROBE_PATHS = ("/_/health", "/_/ready")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def command(target: str) -> list[str]:
    """The exact argv the container runs for one function."""
    return [*ENTRYPOINT, "--target", target]


class HealthRoutes:
    """GET /healthz: the process serves (liveness). GET /readyz: it takes traffic, false once draining."""

    def __init__(self, app: WSGIApp, target: str) -> None:
        self.app = app
        self.target = target

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        probe = path in HEALTH_PATHS or path in OPENFAAS_PROBE_PATHS
        if probe and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            if path != "/healthz" and lifecycle.shutting_down():
                return server.json_reply(start_response, "503 Service Unavailable", {"status": "draining"})
            return server.json_reply(start_response, "200 OK", {"status": "ok", "function": self.target})
        return self.app(environ, start_response)


def function_app(target: str) -> WSGIApp:
    """The functions-framework app of one function of the table, observed, with /healthz and /readyz; its
    errors in JSON, its body at most MAX_REQUEST_BODY_BYTES."""
    import functions_framework

    function = table.BY_NAME.get(target)
    if function is None:
        raise ValueError(f"no function {target!r} in functions/table.py")
    server.setup(function.service)
    app = functions_framework.create_app(target=target, source=str(ROOT / function.source))
    web.answer_http_errors_in_json(app)
    config = ServerSettings()
    observed = server.ObservedFunction(
        web.BodyLimit(app, config.max_body_bytes),
        function=function.name,
        service=function.service,
        route=function.path,
        method=function.method,
        trigger=function.trigger,
        topic=function.topic,
    )
    documented = DocsRoutes(
        EscapedControlCharacters(observed), ROOT / "functions" / function.service / "openapi.yaml"
    )
    root_path = config.root_path
    chain = HealthRoutes(RootPath(documented, root_path) if root_path else documented, target)
    return FunctionFront(chain, observed)


# Every path one of the wrappers around the observed function answers or rewrites (FunctionFront)
_FRONT_PATHS = frozenset(
    (*HEALTH_PATHS, *OPENFAAS_PROBE_PATHS, *DOC_PATHS, "", "/", server.METRICS_PATH, profiling.PATH)
)


class FunctionFront:
    """One test of the path per request instead of one in each wrapper: a path that none of the wrappers
    around the observed function acts on (a function's own route: nearly every request) goes straight to it;
    the others (probes, docs, /metrics, /debug/profile, the root that RootPath rewrites, a path with a
    control character) go through the whole chain, `chain`, unchanged."""

    def __init__(self, chain: WSGIApp, observed: WSGIApp) -> None:
        self.chain = chain
        self.observed = observed

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in _FRONT_PATHS or path.startswith(DOCS_STATIC_PREFIX) or web.has_control_character(path):
            return self.chain(environ, start_response)
        return self.observed(environ, start_response)


class RootPath:
    """The path "/" stands for `path` (OpenFaaS's cron-connector calls a function at its root, no path)."""

    def __init__(self, app: WSGIApp, path: str) -> None:
        self.app = app
        self.path = path

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") in ("", "/"):
            environ = {**environ, "PATH_INFO": self.path}
        return self.app(environ, start_response)


def export_secret_files(directory: Path | None) -> list[str]:
    """Each file of `directory` named like an environment variable becomes that variable, unless it is set
    (OpenFaaS mounts a function's secrets as files); the names exported."""
    if directory is None or not directory.is_dir():
        return []
    exported = []
    for path in sorted(directory.iterdir()):
        if path.is_file() and ENV_NAME.match(path.name) and path.name not in os.environ:
            os.environ[path.name] = path.read_text().rstrip("\n")
            exported.append(path.name)
    return exported


class _KeptPage:
    """Stands in for the client's socket while gunicorn writes its error page, and keeps what it wrote."""

    def __init__(self) -> None:
        self.data = bytearray()

    def gettimeout(self) -> float:
        return 0.0  # non-blocking already: gunicorn.util.write_nonblock then writes at once

    def setblocking(self, _flag: bool) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.data += data

    def makefile(self, *_args: Any, **_kwargs: Any) -> io.BytesIO:  # for http.client, reading it back
        return io.BytesIO(bytes(self.data))


class JsonErrorPages:
    """Mixin for a gunicorn worker: what gunicorn refuses before the app runs is answered in the shop's JSON.

    A workaround, in this one place: gunicorn 27 has no setting or server hook for the answer it writes when
    it refuses a request itself (a header over limit_request_field_size or more than limit_request_fields
    headers: 431; a request line over limit_request_line: 414; a malformed request: 400; an app error after
    the response began: 500). Its Worker.handle_error writes gunicorn.util.write_error's HTML page. Here it
    runs unchanged (its log lines and access-log entry too) against a stand-in socket that keeps the page;
    the status is read back from it with http.client and answered with the same status and the shop's error
    body, written by wsgiref. tests/unit/test_entrypoint.py breaks if gunicorn changes how it writes the page.
    """

    cfg: Any

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        page = _KeptPage()
        super().handle_error(req, page, addr, exc)  # type: ignore[misc]
        if not page.data:  # gunicorn wrote nothing here: let it answer on the real socket as it would
            super().handle_error(req, client, addr, exc)  # type: ignore[misc]
            return
        try:
            written = http.client.HTTPResponse(page)  # type: ignore[arg-type]
            written.begin()
            status, reason = written.status, written.reason
        except (http.client.HTTPException, ValueError):
            client.sendall(bytes(page.data))  # not a page we can read: send it as gunicorn wrote it
            return
        code = web.GRPC_INTERNAL if status >= 500 else web.GRPC_INVALID_ARGUMENT
        message = reason.lower()
        if status == 431:
            message += (
                f": at most {self.cfg.limit_request_fields} header fields of "
                f"{self.cfg.limit_request_field_size} bytes each"
            )
        write_json_error(client, f"{status} {reason}", code, message)


def write_json_error(client: Any, status: str, code: int, message: str) -> None:
    """An HTTP/1.0 answer (the connection closes after it) with the shop's error body, encoded by wsgiref."""
    from wsgiref.handlers import SimpleHandler

    def reply(_environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return web.json_error(start_response, status, code, message)

    with client.makefile("wb") as out:
        handler = SimpleHandler(
            io.BytesIO(), out, sys.stderr, {"SERVER_PROTOCOL": "HTTP/1.0"}, multithread=True
        )
        handler.server_software = "gunicorn"
        handler.run(reply)


class JsonErrorWorker(JsonErrorPages, ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker answering its own refusals in JSON (the dev server's worker)."""


class Draining:
    """Mixin for a gunicorn worker: /readyz turns false the moment SIGTERM arrives."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        lifecycle.begin_shutdown()
        super().handle_exit(sig, frame)  # type: ignore[misc]


class DrainingWorker(Draining, JsonErrorWorker):
    """gunicorn's gthread worker that also turns /readyz false the moment SIGTERM arrives."""


# The servers a function can run under (SHOP_WORKER_CLASS): gunicorn's gevent worker (one greenlet per
# connection: a keep-alive connection is read, answered and read again on one greenlet, where gthread hands
# it between its poller thread and a pool thread twice per request), its gthread worker, or its gevent_pywsgi
# worker (gevent's own HTTP server instead of gunicorn's parser: the lowest floor measured; the default).
WORKER_CLASSES = ("gevent", "gthread", "gevent_pywsgi")


def worker_class(name: str, draining: bool = False) -> type:
    """The shop's gunicorn worker class of that name (functions.gevent_worker is imported only for gevent)."""
    if name == "gthread":
        return DrainingWorker if draining else JsonErrorWorker
    if name == "gevent":
        from functions.gevent_worker import DrainingGeventWorker, JsonErrorGeventWorker

        return DrainingGeventWorker if draining else JsonErrorGeventWorker
    if name == "gevent_pywsgi":
        from functions.gevent_worker import DrainingPyWSGIWorker, ShopPyWSGIWorker

        return DrainingPyWSGIWorker if draining else ShopPyWSGIWorker
    raise ValueError(f"no worker class {name!r}; known: {', '.join(WORKER_CLASSES)}")


def http_server_options(name: str | None = None) -> dict[str, Any]:
    """The gunicorn settings every server of the shop's functions shares: the container's (serve, below) and
    the dev server's; the worker class `name` (default SHOP_WORKER_CLASS). Its `threads` (set by each server)
    are the most requests a worker serves at once: gthread's threads, the gevent worker's in-flight limit;
    worker_connections the most connections the gevent worker keeps open (idle keep-alive ones included)."""
    config = ServerSettings()
    return {
        "worker_class": worker_class(name or config.worker_class),
        "worker_connections": config.worker_connections,
        "limit_request_line": 0,  # as functions-framework's own server: long queries get our 400s
    }


def worker_exit(_server: Any, _worker: Any) -> None:
    """gunicorn's worker_exit hook: the worker drained its requests; close what the bootstraps opened (the
    trace exporter flushes too), and take its live gauges out of the shared metrics directory."""
    lifecycle.run_shutdown_hooks()
    metrics.mark_process_dead(os.getpid())  # gunicorn runs this hook in the exiting worker


def child_exit(_server: Any, worker: Any) -> None:
    """gunicorn's child_exit hook, in the arbiter: also a worker that died without worker_exit (killed)."""
    metrics.mark_process_dead(worker.pid)


# This process started as the container's command, with the cyclic garbage collector off (top of the module)
STARTED_WITHOUT_GC = __name__ == "__main__"


def startup_done() -> None:
    """A process's startup is over: its modules, pydantic's schemas and the app, some 90,000 objects that live
    as long as it does. The cyclic garbage collector, off since the process started, runs again, and
    gc.freeze() moves every object that exists to its permanent generation, never scanned again. A cold start
    makes next to no cyclic garbage (a few hundred objects), yet with the collector on, its collections
    (each full one walking every object made so far) cost about a fifth of the CPU to the first answer."""
    if STARTED_WITHOUT_GC:
        gc.freeze()
        gc.enable()


def when_ready(_server: Any) -> None:
    """gunicorn's when_ready hook, in the arbiter before it forks the workers: its startup is done."""
    startup_done()


def post_fork(_server: Any, _worker: Any) -> None:
    """gunicorn's post_fork hook, in a new worker: it builds the function's app next, the collector off."""
    if STARTED_WITHOUT_GC:
        gc.disable()


def post_worker_init(_worker: Any) -> None:
    """gunicorn's post_worker_init hook: the worker's app is built, before it takes its first request."""
    startup_done()


def share_metrics_between_workers(workers: int, target: str) -> None:
    """Several workers serve one /metrics only through prometheus-client's multiprocess mode: a directory
    they all write, set before any worker starts (or given as PROMETHEUS_MULTIPROC_DIR), emptied here."""
    observability_settings.reset()  # read the environment as it is now
    directory = observability_settings.settings().prometheus_multiproc_dir
    if not directory:
        if workers <= 1:
            return
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        directory = tempfile.mkdtemp(prefix=f"metrics-{target}-", dir=base)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    metrics.prepare_multiprocess_dir(directory)
    observability_settings.reset()


def serve(
    target: str,
    host: str,
    port: int,
    workers: int,
    threads: int,
    graceful_timeout: int,
    log_level: str,
    worker: str | None = None,
) -> None:
    import gunicorn.app.base

    class Server(gunicorn.app.base.BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options: dict[str, Any] = {
                **http_server_options(worker),
                "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                "workers": workers,
                "threads": threads,
                "worker_class": worker_class(worker or ServerSettings().worker_class, draining=True),
                "graceful_timeout": graceful_timeout,
                "timeout": 30,  # the gthread heartbeat, not a request timeout (Knative's revision timeout is)
                "keepalive": 30,  # the queue-proxy reuses connections: closing early races it
                "loglevel": log_level,
                "errorlog": "-",
                "proc_name": f"fn-{target}",
                "worker_exit": worker_exit,
                "child_exit": child_exit,
                "when_ready": when_ready,
                "post_fork": post_fork,
                "post_worker_init": post_worker_init,
            }
            if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
                options["worker_tmp_dir"] = "/dev/shm"  # heartbeat files off the container's overlay disk
            if "control_socket_disable" in self.cfg.settings:
                # gunicorn >= 25 opens a control socket at one fixed per-user path: every server on a machine
                # would share it, and a function has no use for it
                options["control_socket_disable"] = True
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> WSGIApp:
            return function_app(target)

    share_metrics_between_workers(workers, target)
    metrics.load_client_before_workers()  # before a gevent worker patches threading (see there)
    Server().run()


def main(argv: list[str] | None = None) -> int:
    env = ServerSettings()
    parser = argparse.ArgumentParser(
        description="Serve one function of the shop (the container's entry point)"
    )
    parser.add_argument(
        "--target", default=env.function_target or None, help="function name (FUNCTION_TARGET)"
    )
    parser.add_argument("--host", default=env.host, help="bind address (HOST; default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=env.port, help="PORT; default 8080")
    parser.add_argument("--workers", type=int, default=env.workers)
    parser.add_argument("--threads", type=int, default=env.threads)
    parser.add_argument(
        "--worker-class",
        choices=WORKER_CLASSES,
        default=env.worker_class,
        help="gunicorn's worker: gevent_pywsgi, gevent or gthread (SHOP_WORKER_CLASS; default gevent_pywsgi)",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=int,
        default=env.graceful_timeout,
        help="seconds a stopping worker keeps serving the requests in flight",
    )
    parser.add_argument("--log-level", default=env.log_level or "info")
    args = parser.parse_args(argv)
    if not args.target:
        parser.error("name the function: --target NAME or FUNCTION_TARGET")
    if args.target not in table.BY_NAME:
        parser.error(f"unknown function {args.target!r}; known: {', '.join(sorted(table.BY_NAME))}")
    export_secret_files(env.secrets_dir)
    serve(
        args.target,
        args.host,
        args.port,
        args.workers,
        args.threads,
        args.graceful_timeout,
        args.log_level,
        args.worker_class,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
