#!/usr/bin/env bash
# Crash safety: kills `xbuild build` with SIGKILL at many moments and checks that the store
# survives and that a rebuild gives the same digests as an uninterrupted build.
#
#   scripts/crash.sh [ROUNDS]     (default 21; as root, with the fixtures and a QEMU aarch64
#                                  handler; uses docker-registry, skopeo, openssl)
#
# The build: a two-platform Dockerfile whose base comes from a local registry (pull), with a
# RUN under QEMU for arm64 that writes ~20 MB (kept as a snapshot, compressed when the image is written), a COPY of 24 MB of
# incompressible context (store write), pushed back to the registry (push), with
# SOURCE_DATE_EPOCH set so the index digest is reproducible.
#
# The kill moments: the first ROUNDS of the list below. Most wait for an event of the
# `--progress=rawjson` stream (the base's FROM, its first bytes, a RUN under emulation, the
# COPY, the compression of the image's step layers from their snapshots, the push); the rest are timed delays spread over a cold build. Each round starts
# from an empty store. After each kill:
#   1. `xbuild store check` must exit 0 (it verifies every blob and removes what the killed
#      process left in tmp/);
#   2. the same build, run again on that store, must succeed and print the index digest of
#      the uninterrupted build, and the registry must hold that index;
#   3. `xbuild store check` must exit 0 again and leave nothing in tmp/.
# Prints one line per round and a summary; exits 1 if any round failed.
#
# Environment: XBUILD (the binary; default: target/release/xbuild, built when missing),
# KEEP=1 keeps the work directory.
set -euo pipefail

ROUNDS="${1:-21}"
ROOT_DIR="$(cd "$(dirname "$0")/.." && pwd)"
XBUILD="${XBUILD:-$ROOT_DIR/target/release/xbuild}"
if [ ! -x "$XBUILD" ]; then
    (cd "$ROOT_DIR" && cargo build --release --locked --bin xbuild)
fi
[ "$(id -u)" = 0 ] || { echo "crash.sh: run as root (builds need namespaces and overlayfs)" >&2; exit 3; }
for tool in docker-registry skopeo openssl curl; do
    command -v "$tool" >/dev/null || { echo "crash.sh: needs $tool (scripts/setup-host.sh)" >&2; exit 3; }
done

WORK="$(mktemp -d /tmp/xbuild-crash.XXXXXX)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cleanup() {
    "$ROOT_DIR/scripts/fixtures.sh" registry stop "$PORT" >/dev/null 2>&1 || true
    if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
"$ROOT_DIR/scripts/fixtures.sh" registry start "$PORT" >/dev/null
REG="127.0.0.1:$PORT"

# The context: 24 MB of incompressible but deterministic bytes (AES-CTR of zeros).
mkdir -p "$WORK/ctx/payload"
for part in a b c; do
    # openssl dies of SIGPIPE when head has enough: not an error.
    (openssl enc -aes-128-ctr -nosalt -pass "pass:crash-$part" -in /dev/zero 2>/dev/null || true) |
        head -c $((8 << 20)) >"$WORK/ctx/payload/$part.bin"
done
cat >"$WORK/ctx/Dockerfile" <<'EOF'
ARG REG
FROM ${REG}/busybox:latest
RUN seq 1 2500000 > /seq && sha256sum /seq > /seq.sum
COPY payload/ /payload/
RUN cat /payload/*.bin | sha256sum > /payload.sum && uname -m > /arch
CMD ["cat", "/arch"]
EOF
export SOURCE_DATE_EPOCH=1700000000
TAG="$REG/crash/app:1"

build_args=(build --platform linux/amd64,linux/arm64 --build-arg "REG=$REG" -t "$TAG" --push)

xb() { XBUILD_ROOT="$WORK/store" "$XBUILD" "$@"; }

# The reference: an uninterrupted cold build.
start=$(date +%s.%N)
reference="$(xb "${build_args[@]}" -q "$WORK/ctx")"
cold=$(echo "$(date +%s.%N) - $start" | bc)
printf 'reference index %s (cold build %.1f s)\n' "$reference" "$cold"
xb store check >/dev/null
registry_index() {
    skopeo inspect --raw --tls-verify=false "docker://$TAG" | sha256sum | sed 's/^/sha256:/; s/ .*//'
}
[ "$(registry_index)" = "$reference" ] || { echo "the registry does not hold the reference index" >&2; exit 1; }

# Kill moments: "event:<jq-free grep pattern on the rawjson stream>" or "delay:<seconds>".
# Patterns match one line of --progress=rawjson output.
moments=(
    'event:"event":"started".*\] FROM '
    'event:"event":"bytes"'
    'event:"event":"started".*linux/arm64.*RUN seq'
    'event:"event":"started".*linux/amd64.*RUN seq'
    'event:"event":"log".*'
    'event:"event":"finished"'
    'event:"event":"started".*COPY payload'
    'event:"event":"started".*linux/amd64.*RUN cat'
    'event:"event":"started".*compressing'
    'event:"event":"started".*linux/arm64.*COPY payload'
    'event:"event":"started".*pushing'
    'delay:0.3'
    'delay:0.8'
    "delay:$(echo "$cold * 0.15" | bc)"
    "delay:$(echo "$cold * 0.3" | bc)"
    "delay:$(echo "$cold * 0.45" | bc)"
    "delay:$(echo "$cold * 0.6" | bc)"
    "delay:$(echo "$cold * 0.75" | bc)"
    "delay:$(echo "$cold * 0.85" | bc)"
    "delay:$(echo "$cold * 0.95" | bc)"
    "delay:$(echo "$cold * 1.05" | bc)"
)

failures=0
survived=0
for round in $(seq 1 "$ROUNDS"); do
    moment="${moments[$(( (round - 1) % ${#moments[@]} ))]}"
    rm -rf "$WORK/store" "$WORK/events"
    # A fresh registry repository per round would hide pushes of the killed build; the tag
    # is pushed again by each rebuild, which is what a user does after a crash.
    # Not through the xb function: $! must be xbuild itself, not a subshell around it.
    : >"$WORK/events"
    XBUILD_ROOT="$WORK/store" "$XBUILD" "${build_args[@]}" --progress rawjson "$WORK/ctx" \
        >/dev/null 2>"$WORK/events" &
    pid=$!
    killed=no
    start=$(date +%s.%N)
    case "$moment" in
    event:*)
        pattern="${moment#event:}"
        while kill -0 "$pid" 2>/dev/null; do
            if grep -qE "$pattern" "$WORK/events"; then
                kill -KILL "$pid" 2>/dev/null && killed=yes
                break
            fi
            sleep 0.02
        done
        ;;
    delay:*)
        sleep "${moment#delay:}"
        kill -KILL "$pid" 2>/dev/null && killed=yes
        ;;
    esac
    wait "$pid" 2>/dev/null || true
    at=$(echo "$(date +%s.%N) - $start" | bc)
    left=$(find "$WORK/store/tmp" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    problems=""
    if ! check1="$(xb store check 2>&1)"; then problems="check after kill: $check1"; fi
    if [ -z "$problems" ]; then
        if ! again="$(xb "${build_args[@]}" -q "$WORK/ctx" 2>"$WORK/rebuild.err")"; then
            problems="rebuild failed: $(tail -3 "$WORK/rebuild.err")"
        elif [ "$again" != "$reference" ]; then
            problems="rebuild gave $again"
        elif [ "$(registry_index)" != "$reference" ]; then
            problems="the registry holds another index"
        elif ! check2="$(xb store check 2>&1)"; then
            problems="check after rebuild: $check2"
        elif [ -n "$(ls -A "$WORK/store/tmp" 2>/dev/null)" ]; then
            problems="tmp/ not empty after the rebuild"
        fi
    fi
    if [ -n "$problems" ]; then
        failures=$((failures + 1))
        printf 'round %2d  %-45s killed=%-3s at %5.1f s  FAILED: %s\n' "$round" "$moment" "$killed" "$at" "$problems"
    else
        [ "$killed" = yes ] && survived=$((survived + 1))
        printf 'round %2d  %-45s killed=%-3s at %5.1f s  tmp leftovers %2d  ok\n' "$round" "$moment" "$killed" "$at" "$left"
    fi
done
echo "kills survived: $survived of $ROUNDS rounds ($failures failures; killed=no: the build ended first)"
[ "$failures" = 0 ]
