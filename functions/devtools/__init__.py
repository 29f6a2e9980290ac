"""Dev tooling of the functions: what `make orders`, the tests and the benchmarks run, never the image.

`.dockerignore` leaves this package out of the image, and an import-linter contract (pyproject.toml) keeps
runtime code (the functions, shared_lib) from importing it. Tooling that needs no service code lives in
shared_lib.devtools (the PostgreSQL, Kafka and Memcached launchers, the fault scenarios).
"""
