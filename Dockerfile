# syntax=docker/dockerfile:1
# midihub in a container. Build and run (see "Deploy" in README.md):
#   docker build -t midihub .
#   docker run -d --name midihub -p 5040-5043:5040-5043/udp -p 5050-5053:5050-5053/udp \
#       -p 127.0.0.1:8080:8080 -v midihub-data:/data midihub
# Configuration: put midihub.toml (or a legacy midiports file) in /data; the database and a
# generated control token (midihub.token) are kept there too. `docker kill -s SIGHUP midihub`
# re-reads the configuration.

# Build stage: midihub's wheel, from this source tree, and the wheels of its dependencies
# (with uvloop, the `speed` extra).
# EXTRAS: the optional dependencies built in; a fleet hub ([fleet]) adds "fleet" (PostgreSQL
# driver), as deploy/fleet/compose.yaml does.
FROM python:3.11-slim AS build
ARG EXTRAS=speed
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY docs/connect.md ./docs/
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[${EXTRAS}]"

# Runtime stage: those wheels only; no build tools, no sources, no index.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN groupadd --gid 10001 midihub \
    && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin midihub \
    && install -d -o 10001 -g 10001 -m 0750 /data
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl

USER 10001:10001
WORKDIR /data
VOLUME /data

# Each hub port P is an RTP MIDI session on UDP P (control) and P+1 (data): the default
# groups GroupOne (5040 in, 5042 out) and GroupTwo (5050 in, 5052 out). 8080: dashboard + API.
EXPOSE 5040-5041/udp 5042-5043/udp 5050-5051/udp 5052-5053/udp 8080/tcp

HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/api/health', timeout=4)"]

# SIGTERM (docker stop): every participant gets BY and the hub exits 0 within 2 s.
CMD ["midihub", "serve", "--web", "0.0.0.0:8080", "--db", "/data/midihub.db"]
