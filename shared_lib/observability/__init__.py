"""Observability for every function: Prometheus metrics, traces (OpenTelemetry over OTLP/HTTP, or AWS
X-Ray), structured JSON logs and a guarded profiler, wired in shared_lib and functions.entrypoint so that no
service repeats any of it.

- settings: ObservabilitySettings, the one reader of the environment here;
- metrics: every metric family, created lazily, and the /metrics exposition (multiprocess aware);
- tracing (+ xray): spans behind one small interface, a no-op unless an exporter is configured;
- logs: JSON lines with trace and request ids;
- server: the WSGI middleware each function is served through (requests, /metrics, /debug/profile);
- profiling: py-spy behind a token; outbox: a scrape-time gauge of an outbox table's backlog.
"""
