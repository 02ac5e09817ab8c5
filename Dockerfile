# Container image of openai-projects-exporter.
#
# The base image is a build argument so that a build can use a mirrored or a locally made
# image (deploy/container-test.sh makes one with debootstrap). Both stages use the same base,
# so the virtualenv built in the first stage finds its interpreter at the same path in the
# second one, whether that is /usr/local/bin/python3 (official images) or /usr/bin/python3.
#
# Builds behind a private package index or a TLS-intercepting proxy take two optional
# BuildKit secrets, which never end up in a layer:
#   --secret id=pipconf,src=pip.conf      mounted as /etc/pip.conf (index-url, ...)
#   --secret id=cacert,src=ca-bundle.pem  the CA bundle pip trusts instead of its own
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS builder
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# pip and setuptools are removed afterwards: the runtime needs neither, and they are the
# bulk of what a scanner would flag.
RUN --mount=type=secret,id=pipconf,target=/etc/pip.conf \
    --mount=type=secret,id=cacert,target=/run/secrets/cacert \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check . \
    && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="openai-projects-exporter" \
      org.opencontainers.image.description="Prometheus exporter for the projects of an OpenAI organization"
COPY --from=builder /opt/venv /opt/venv
COPY deploy/healthcheck.py /opt/healthcheck.py
# Bytecode was compiled at install time; the root filesystem may be read-only at run time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPENAI_EXPORTER_WEB_LISTEN_ADDRESS=:9186
# A numeric user needs no passwd entry and lets Kubernetes verify runAsNonRoot.
USER 10001:10001
EXPOSE 9186
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "/opt/healthcheck.py"]
# Exec form: the exporter is PID 1 and receives SIGTERM from `docker stop` directly.
ENTRYPOINT ["openai-projects-exporter"]
