# syntax=docker/dockerfile:1
# One image, four programs (the command chooses):
#   python -m controller   the kopf controller (default)
#   python -m api          the Ops Console REST API (a sidecar of the controller)
#   python -m runner       the runner, in the Job pods of the job executor
#   python -m sim          the market-data simulator (demo only)
#   mdops                  the command line of the REST API
#
# Built and run for real by `make image` (tools/build-image.sh) with Debian's podman 4.3 and
# buildah 1.28, and exercised by tests/image/ (the four programs as uid 10001 on a read-only root
# filesystem, the API against the local control plane, Job pods of the job executor, the controller
# with the local executor). Any OCI builder works: `docker build -t mdops:0.1.0 .` too.
#
# The base is any Debian-based image with python3.11 and python3.11 -m venv. By default the official
# one, pinned by tag; for production, pin it by digest too (python:3.11-slim-bookworm@sha256:...).
# Where no registry is reachable, tools/debian-base.sh bootstraps a Debian bookworm base with
# mmdebstrap and `make image` passes it as --build-arg PYTHON_IMAGE=localhost/mdops-base:<recipe>.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- console: the Ops Console's front-end libraries (npm, pinned by package-lock.json) ------------
# Debian's nodejs and npm (their versions are Debian's; npm ci checks every package's integrity
# against the lockfile); tools/build-console.sh copies the files the API serves into
# api/console/vendor/, which the build stage takes. npm reaches the npm registry here only, and
# trusts the ca-bundle secret too when there is one (a TLS-inspecting proxy; see below).
FROM ${PYTHON_IMAGE} AS console
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
COPY tools/apt-install.sh tools/build-console.sh tools/
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca-bundle; fi \
    && tools/build-console.sh --omit=dev

# -- requirements: what pyproject.toml pins, alone --------------------------------------------
# The stages below copy these files, so their layers are rebuilt only when the pins change, not when
# anything else in pyproject.toml does (the version, the tools' settings).
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; project = tomllib.load(open('pyproject.toml', 'rb')); \
    open('requirements.txt', 'w').write('\\n'.join(project['project']['dependencies'])); \
    open('build-requirements.txt', 'w').write('\\n'.join(project['build-system']['requires']))"

# pip reaches PyPI in the two stages below only. Behind a TLS-inspecting proxy, give the build the
# host's CA bundle as the secret ca-bundle, as tools/build-image.sh does:
#   --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt
# A secret is mounted for one RUN and never stored in a layer. Without it, pip trusts its own bundle.

# -- dependencies: the runtime's venv with the pinned dependencies, compiled -------------------
# What nothing imports is removed, or the image would exceed its size budget: the kubernetes
# client's asyncio copy of itself (kubernetes/aio, about 70 MB with its bytecode) and the test suites
# that pandas and numpy (the calendar library's) ship (about 60 MB with their bytecode). No build
# tools in the image: pip and setuptools are removed. The venv finds mdops itself in /opt/mdops/app
# (a .pth file), which the build stage fills: a code change leaves this stage, and its 200 MB layer
# in the image, as they were.
FROM ${PYTHON_IMAGE} AS dependencies
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/mdops
COPY --from=requirements /src/requirements.txt /tmp/requirements.txt
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && /opt/mdops/bin/pip install --requirement /tmp/requirements.txt \
    && rm -r /opt/mdops/lib/python3.*/site-packages/kubernetes/aio \
    && find /opt/mdops/lib/python3.*/site-packages/pandas /opt/mdops/lib/python3.*/site-packages/numpy \
        -name tests -type d -prune -exec rm -r {} + \
    && /opt/mdops/bin/pip uninstall --yes pip setuptools \
    && /opt/mdops/bin/python -m compileall -q /opt/mdops/lib \
    && /opt/mdops/bin/python -c "import site; open(site.getsitepackages()[0] + '/mdops.pth', 'w').write('/opt/mdops/app\\n')"

# -- build: mdops itself, built with the pinned build backend into /opt/mdops/app, compiled ------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/mdops
COPY --from=requirements /src/build-requirements.txt /tmp/build-requirements.txt
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && /opt/mdops/bin/pip install --requirement /tmp/build-requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runbooks/ runbooks/
COPY controller/ controller/
COPY api/ api/
COPY --from=console /src/api/console/vendor/ api/console/vendor/
COPY runner/ runner/
COPY sim/ sim/
COPY cli/ cli/
# The build venv sits where the runtime's does, so that the commands pip writes (mdops, kubectl-mdops, in
# /opt/mdops/app/bin) name the runtime's interpreter, /opt/mdops/bin/python.
RUN /opt/mdops/bin/pip install --no-deps --no-build-isolation --target /opt/mdops/app . \
    && /opt/mdops/bin/python -m compileall -q /opt/mdops/app

# -- init: tini (Debian's), the runtime's PID 1 ----------------------------------------------
# A container's PID 1 inherits every orphan of the container: the background jobs a script leaves when
# it ends (the local executor runs scripts in the controller's container). Python reaps only its own
# children, so each such job would stay a zombie for the container's life; tini reaps them all, and
# passes signals on to the program it runs. Installed here, so that the runtime stage has no apt-get.
FROM ${PYTHON_IMAGE} AS init
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# -- runtime: tini, the venv, the reference scripts, a non-root user -----------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="mdops" \
      org.opencontainers.image.description="Runbook controller, Ops Console API and runner for a market-data platform"
# A fixed numeric uid, so that runAsNonRoot can be verified by the kubelet.
RUN groupadd --system --gid 10001 mdops \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mdops
COPY --from=init /usr/bin/tini /usr/bin/tini
COPY --from=dependencies /opt/mdops /opt/mdops
COPY --from=build /opt/mdops/app /opt/mdops/app
# The reference scripts: the local executor's, and the Job pods' unless a ConfigMap of scripts is
# mounted over them.
COPY --chmod=0755 examples/scripts/ /etc/mdops/scripts/
# What tini runs: the command, or the list of the image's programs for what is not one (`--help`).
COPY --chmod=0755 tools/image-entrypoint.sh /usr/local/bin/mdops-entrypoint
ENV PATH=/opt/mdops/app/bin:/opt/mdops/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MDOPS_SCRIPTS_DIR=/etc/mdops/scripts
USER 10001:10001
WORKDIR /tmp
# 8080 API, 9102 controller metrics, 8081 controller liveness.
EXPOSE 8080 9102 8081
# tini runs the command: give Kubernetes' args (not command, which would replace tini). -e 143: a
# program that ends by the SIGTERM it was sent, as uvicorn (the API) does once it has shut down, has
# stopped as asked: exit code 0, not 143.
ENTRYPOINT ["/usr/bin/tini", "-e", "143", "--", "/usr/local/bin/mdops-entrypoint"]
CMD ["python", "-m", "controller"]
