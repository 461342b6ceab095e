# syntax=docker/dockerfile:1
# One image, four programs (the command chooses):
#   python -m controller   the kopf controller (default)
#   python -m api          the Ops Console REST API (a sidecar of the controller)
#   python -m runner       the runner, in the Job pods of the job executor
#   python -m sim          the market-data simulator (demo only)
#
# The base is pinned by tag. For production, pin it by digest too
# (python:3.11-slim-bookworm@sha256:...): the digest cannot be looked up from the
# machine this file is written and linted on, which has no registry access.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- console: the Ops Console's front-end libraries (npm, pinned by package-lock.json)
# Debian's nodejs and npm; tools/build-console.sh copies the files the API serves into
# api/console/vendor/. Versions of nodejs/npm are Debian's (npm ci checks the packages'
# integrity against the lockfile).
FROM ${PYTHON_IMAGE} AS console
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
COPY tools/apt-install.sh tools/build-console.sh tools/
RUN tools/build-console.sh --omit=dev

# -- build: install the package and its pinned dependencies into a venv ------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/mdops
WORKDIR /src
# Dependencies first (pinned in pyproject.toml), so a code change reuses this layer.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
    > /tmp/requirements.txt \
    && /opt/mdops/bin/pip install --requirement /tmp/requirements.txt
COPY runbooks/ runbooks/
COPY controller/ controller/
COPY api/ api/
COPY --from=console /src/api/console/vendor/ api/console/vendor/
COPY runner/ runner/
COPY sim/ sim/
# No build tools in the final image: pip and setuptools stay here.
RUN /opt/mdops/bin/pip install --no-deps . \
    && /opt/mdops/bin/pip uninstall --yes pip setuptools \
    && /opt/mdops/bin/python -m compileall -q /opt/mdops/lib

# -- final: the venv, the reference scripts, a non-root user -------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mdops" \
      org.opencontainers.image.description="Runbook controller, Ops Console API and runner for a market-data platform"
# A fixed numeric uid, so that runAsNonRoot can be verified by the kubelet.
RUN groupadd --system --gid 10001 mdops \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mdops
COPY --from=build /opt/mdops /opt/mdops
# The reference scripts, run by both executors unless a ConfigMap of your own scripts is mounted over
# them (MDOPS_SCRIPTS_CONFIGMAP, the chart's scripts.configMapName).
COPY --chmod=0755 examples/scripts/ /etc/mdops/scripts/
ENV PATH=/opt/mdops/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MDOPS_SCRIPTS_DIR=/etc/mdops/scripts
USER 10001:10001
WORKDIR /tmp
# 8080 API, 9102 controller metrics, 8081 controller liveness.
EXPOSE 8080 9102 8081
CMD ["python", "-m", "controller"]
