#!/usr/bin/env bash
# Builds the exporter's container image for real and runs it the way it is deployed: read-only
# root filesystem, the image's own non-root user, key file mounted read-only, sharing the
# network namespace of a fake upstream (the project's simulator, run on the host). Checks
# /metrics, /readyz, /healthz, the image HEALTHCHECK and a clean exit on `docker stop`.
#
# Run as root from anywhere: bash deploy/container-test.sh
# Installs docker.io, debootstrap and curl from the machine's apt sources when missing, and
# starts dockerd when none is running (and stops it again at the end).
#
# Environment:
#   PYTHON      interpreter with the project's dependencies, for the fake upstream
#               (default: .venv/bin/python when present, else python3)
#   BASE_IMAGE  base image for the build; default: the official slim Python image when it can
#               be pulled, else a Debian bookworm image made here with debootstrap (cached)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo "$ROOT/.venv/bin/python" || echo python3)}
IMAGE=openai-projects-exporter:container-test
OFFICIAL_BASE=python:3.12-slim
# Bump the suffix when the debootstrap recipe below changes, so a cached base is remade.
LOCAL_BASE=openai-projects-exporter-base:bookworm-1
NAME=openai-projects-exporter-test-$$
# Debian's docker.io client builds with BuildKit by itself; a newer docker CLI elsewhere on
# PATH may need a buildx plugin that is not installed.
DOCKER=${DOCKER:-/usr/bin/docker}

log() { echo "container-test: $*"; }
fail() { echo "container-test: FAIL: $*" >&2; exit 1; }

# wait_for SECONDS WHAT COMMAND...: retry COMMAND every half second, fail after SECONDS.
wait_for() {
    local limit=$1 deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "timed out after ${limit}s waiting for $what"
        sleep 0.5
    done
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

http_code() { curl -s -o /dev/null -m 5 -w '%{http_code}' "$1" || true; }

[ "$(id -u)" = 0 ] || fail "run as root (it installs packages and runs dockerd)"

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -x "$DOCKER" ] || fail "$DOCKER missing (Debian's docker.io provides it)"

WORK=$(mktemp -d)
dockerd_pid=""
upstream_pid=""
cleanup() {
    local rc=$?
    if ((rc != 0)); then
        # The logs live in $WORK, which goes away below: show their ends now.
        logs=("$WORK/upstream.log")
        "$DOCKER" info >/dev/null 2>&1 || logs+=("$WORK/dockerd.log")
        for log_file in "${logs[@]}"; do
            [ -s "$log_file" ] && { echo "--- tail of $(basename "$log_file")"; tail -15 "$log_file"; } >&2
        done
        "$DOCKER" inspect "$NAME" >/dev/null 2>&1 && "$DOCKER" logs --tail 15 "$NAME" >&2 2>&1
    fi
    "$DOCKER" rm -f "$NAME" >/dev/null 2>&1 || true
    [ -z "$upstream_pid" ] || kill "$upstream_pid" 2>/dev/null || true
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -rf "$WORK"
    ((rc == 0)) || echo "container-test: failed (exit $rc)" >&2
    exit "$rc"
}
trap cleanup EXIT

if ! "$DOCKER" info >/dev/null 2>&1; then
    # A daemon killed earlier leaves its pid file behind, and dockerd refuses to start over it.
    if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        rm -f /var/run/docker.pid
    fi
    log "starting dockerd"
    dockerd >"$WORK/dockerd.log" 2>&1 &
    dockerd_pid=$!
    wait_for 60 "dockerd" "$DOCKER" info
fi

# The Debian mirror this machine's apt already uses: the host of a registry is read from the
# machine's configuration, never written into the project.
debian_mirror() {
    apt-get indextargets --format '$(SITE) $(ORIGIN) $(CODENAME) $(COMPONENT)' 'Identifier: Packages' |
        awk '$2 == "Debian" && $3 !~ /-/ && $4 == "main" { print $1; exit }'
}

make_local_base() {
    local mirror rootfs=$WORK/rootfs
    mirror=$(debian_mirror)
    [ -n "$mirror" ] || { apt-get update -qq && mirror=$(debian_mirror); }
    [ -n "$mirror" ] || fail "no Debian mirror in this machine's apt sources"
    log "debootstrap bookworm from $mirror (a few minutes)"
    timeout 900 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
        { tail -20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
    # Package caches, indexes and docs are dead weight in every image built on this base.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc "$rootfs"/usr/share/man "$rootfs"/usr/share/locale
    tar -C "$rootfs" -c . | "$DOCKER" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' - "$LOCAL_BASE" >/dev/null
    rm -rf "$rootfs"
}

if [ -n "${BASE_IMAGE:-}" ]; then
    base=$BASE_IMAGE
elif timeout 120 "$DOCKER" pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then
    base=$OFFICIAL_BASE
else
    log "$OFFICIAL_BASE cannot be pulled; using a debootstrapped Debian base"
    "$DOCKER" image inspect "$LOCAL_BASE" >/dev/null 2>&1 || make_local_base
    base=$LOCAL_BASE
fi

# The build reaches the package index this machine's pip uses, through the optional secrets
# the Dockerfile offers: a pip.conf with the machine's http(s) index settings (local file://
# indexes and paths do not exist inside the build) and the machine's CA bundle.
{ "$PYTHON" -m pip config list 2>/dev/null || true; } | "$PYTHON" -c '
import re, sys
lines = ["[global]"]
for line in sys.stdin:
    m = re.match(r"[^.]*\.(index-url|extra-index-url|trusted-host|timeout|default-timeout)=(.*)", line.strip())
    if not m:
        continue
    value = " ".join(v for v in m[2].strip("\x27\"").split() if not v.startswith("file:"))
    if value:
        lines.append(f"{m[1]} = {value}")
print("\n".join(lines))
' >"$WORK/pip.conf"
cacert=${PIP_CERT:-$("$PYTHON" -m pip config get global.cert 2>/dev/null || true)}
[ -f "$cacert" ] || cacert=/etc/ssl/certs/ca-certificates.crt
secrets=(--secret "id=pipconf,src=$WORK/pip.conf")
[ -f "$cacert" ] && secrets+=(--secret "id=cacert,src=$cacert")

log "building $IMAGE on $base"
DOCKER_BUILDKIT=1 timeout 900 "$DOCKER" build --network host --progress plain \
    --build-arg "BASE_IMAGE=$base" "${secrets[@]}" -t "$IMAGE" "$ROOT" >"$WORK/build.log" 2>&1 ||
    { tail -40 "$WORK/build.log" >&2; fail "docker build"; }
log "image size: $("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%d MB", $1 / 1e6 }')"

[ "$("$DOCKER" image inspect -f '{{.Config.User}}' "$IMAGE")" = 10001:10001 ] ||
    fail "image does not run as user 10001"
"$DOCKER" run --rm --read-only --entrypoint sh "$IMAGE" -c \
    'test ! -e /etc/pip.conf && test ! -e /run/secrets/cacert && test ! -e /root/.cache/pip' ||
    fail "build secrets or pip caches were left in the image"

# The fake upstream on the host's loopback; the container shares the host's network.
KEY="sk-admin-container-test-$$"
umask 022
printf '%s\n' "$KEY" >"$WORK/admin-key"
chmod 0444 "$WORK/admin-key"
upstream_port=$(free_port)
"$PYTHON" -m exporter.simulator --listen "127.0.0.1:$upstream_port" --projects 300 \
    --admin-key "$KEY" >"$WORK/upstream.log" 2>&1 &
upstream_pid=$!
wait_for 30 "the fake upstream" \
    curl -sf -m 2 -H "Authorization: Bearer $KEY" "http://127.0.0.1:$upstream_port/v1/organization/projects"

port=$(free_port)
log "running the exporter read-only on 127.0.0.1:$port against the fake upstream"
"$DOCKER" run -d --name "$NAME" --network host --read-only --cap-drop ALL \
    --security-opt no-new-privileges --health-interval 2s \
    -v "$WORK/admin-key:/run/secrets/openai-admin-key:ro" \
    -e OPENAI_ADMIN_KEY_FILE=/run/secrets/openai-admin-key \
    -e "OPENAI_EXPORTER_WEB_LISTEN_ADDRESS=127.0.0.1:$port" \
    "$IMAGE" --api.base-url "http://127.0.0.1:$upstream_port/v1" --poll.interval 5s >/dev/null ||
    fail "docker run"

running() { [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$NAME")" = true ]; }
# Stops waiting early (true) when the container has exited: nothing more will come.
ready_or_exited() { ! running || [ "$(http_code "http://127.0.0.1:$port/readyz")" = 200 ]; }
if ! (wait_for 60 "/readyz to answer 200" ready_or_exited) || ! running; then
    fail "the exporter never became ready"
fi
[ "$(http_code "http://127.0.0.1:$port/healthz")" = 200 ] || fail "/healthz is not 200"

curl -sf -m 5 "http://127.0.0.1:$port/metrics" >"$WORK/metrics" || fail "GET /metrics"
grep -q '^openai_up 1' "$WORK/metrics" || fail "openai_up is not 1"
projects=$(awk '/^openai_projects\{/ { n += $2 } END { print n + 0 }' "$WORK/metrics")
[ "$projects" = 300 ] || fail "openai_projects sums to $projects, the upstream has 300"
[ "$(grep -c '^openai_project_info{' "$WORK/metrics")" = 300 ] || fail "expected 300 openai_project_info series"

[ "$("$DOCKER" exec "$NAME" id -u)" = 10001 ] || fail "the exporter does not run as uid 10001"
if "$DOCKER" exec "$NAME" sh -c 'touch /tmp/probe' 2>/dev/null; then
    fail "the root filesystem is writable"
fi
healthy() { [ "$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$NAME")" = healthy ]; }
wait_for 30 "the image HEALTHCHECK to report healthy" healthy
"$DOCKER" logs "$NAME" >"$WORK/stdout" 2>"$WORK/stderr"
"$PYTHON" -c 'import json, sys; [json.loads(line) for line in open(sys.argv[1])]' "$WORK/stdout" ||
    fail "the exporter's stdout is not JSON lines"

log "docker stop"
start=$(date +%s%N)
"$DOCKER" stop -t 10 "$NAME" >/dev/null
took_ms=$((($(date +%s%N) - start) / 1000000))
code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$NAME")
[ "$code" = 0 ] || fail "exit code $code on docker stop (137 means SIGTERM was not handled)"
((took_ms <= 6000)) || fail "docker stop took ${took_ms}ms; the exporter should exit within 5s of SIGTERM"

log "OK: image builds on $base, runs read-only as uid 10001, serves /metrics and /readyz, stops cleanly in ${took_ms}ms"
