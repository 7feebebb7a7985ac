#!/usr/bin/env bash
# The floor of a bench workload: its RUN commands alone, with no builder around them, in a
# plain chroot of the same base root file systems (the fixtures' debian and busybox trees,
# the ones its images are made of), under the same QEMU (the binfmt_misc handler with the F
# flag: qemu-user-static), the two platforms side by side as xbuild runs them. What a builder
# adds on top of this (pulls, snapshots, layers, the sandbox, the cache) is its overhead;
# scripts/bench.sh prints it next to xbuild's times.
#
#   scripts/floor.sh [--workload app|service] [--repeat N] [--platforms P1,P2] [--results FILE]
#                    [--keep DIR] [--cold-only | --one-edit-only]
# --keep DIR: work in DIR (made if missing) and leave the rounds' trees there, unmounted,
# instead of deleting them (scripts/bench.sh runs a floor round beside each of xbuild's cold
# rounds and deletes its scratch at the end: a deletion of tens of thousands of files just
# before a timed cold build slows that build's inode allocation on this machine's ext4).
# --cold-only / --one-edit-only (with --keep DIR): the cold row alone, leaving its trees in
# DIR; later, the one-edit row alone on the trees of DIR (its rounds 1..N). scripts/bench.sh
# runs each floor row beside xbuild's same row, so that the two see the same minutes of load.
#
# Rows (each N times, default 3; one line per round on stdout, "ROW floor SECONDS 0" like
# bench.sh's results, and a median summary on stderr; the service's rows are prefixed
# `service-` as in bench.sh):
#   app (benches/app, the reference workload):
#     cold      every RUN of benches/app in order, per platform (apt-get update + install gcc
#               libc6-dev from Debian's mirror, the compile, the final stage's rm/mkdir/chown),
#               the platforms concurrently; the wall time until both finished
#     one-edit  the compile alone (the step an edit of hello.c re-runs), both platforms
#               concurrently, on the trees the cold row left
#   service (benches/service):
#     service-cold      apt-get update + install python3 python3-pip python3-venv, the venv,
#                       the pip install of requirements.txt (PyPI, with the host's CA bundle
#                       at /run/secrets/cacert as the build's secret), the app copied in
#     service-one-edit  the app copied in again (an edit of app/service/wsgi.py re-runs no
#                       RUN: the COPY is the last step)
# Each command's own time is printed on stderr after each round (platform, seconds, the
# command's first 60 characters), to compare with a builder's step running the same command.
# Not timed: copying the base trees, hello.c, requirements.txt and the secret into place (a
# builder's snapshot, COPY and mount work, part of its overhead).
#
# Needs root, the fixtures (scripts/fixtures.sh build), binfmt_misc with qemu-user-static
# for foreign platforms, and the network to Debian's mirror (apt-get, as the workload) and,
# for the service, PyPI.
set -eu
cd "$(dirname "$0")/.."
REPO="$PWD"

REPEAT=3 PLATFORMS="linux/amd64,linux/arm64" RESULTS="" WORKLOAD=app KEEP="" ROWS=both
USAGE="usage: $0 [--workload app|service] [--repeat N] [--platforms P1,P2] [--results FILE] [--keep DIR] [--cold-only | --one-edit-only]"
while [ $# -gt 0 ]; do
    case "$1" in
        --workload) WORKLOAD="$2"; shift ;;
        --repeat) REPEAT="$2"; shift ;;
        --platforms) PLATFORMS="$2"; shift ;;
        --results) RESULTS="$2"; shift ;;
        --keep) KEEP="$2"; shift ;;
        --cold-only) ROWS=cold ;;
        --one-edit-only) ROWS=one-edit ;;
        *) echo "$USAGE" >&2; exit 2 ;;
    esac
    shift
done
case "$WORKLOAD" in
    app|service) ;;
    *) echo "$USAGE" >&2; exit 2 ;;
esac
if [ "$ROWS" != both ] && [ -z "$KEEP" ]; then
    echo "floor: --cold-only and --one-edit-only need --keep DIR (the trees the rows share)" >&2
    exit 2
fi
[ "$(id -u)" = 0 ] || { echo "floor: run as root" >&2; exit 3; }
log() { echo "floor: $*" >&2; }

FIXTURES="${XBUILD_FIXTURES:-/var/cache/xbuild-fixtures/current}"
[ -e "$FIXTURES/READY" ] || scripts/fixtures.sh build >&2
if [ -n "$KEEP" ]; then
    mkdir -p "$KEEP"
    WORK="$(cd "$KEEP" && pwd)"
else
    WORK="$(mktemp -d /var/tmp/xbuild-floor.XXXXXX)"
fi
# unmount_under DIR: every mount below DIR, deepest first.
unmount_under() {
    awk -v dir="$1/" 'index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r mount; do umount -l "$mount" || true; done
}
cleanup() {
    unmount_under "$WORK"
    [ -n "$KEEP" ] || rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
[ -n "$RESULTS" ] || RESULTS="$WORK/results"
: > "$WORK/steps"

IFS=, read -r -a platforms <<< "$PLATFORMS"
host_platform="linux/$(dpkg --print-architecture)"
CHROOT="$(command -v chroot)"

# mount_root ROOT: /proc and /dev as a builder gives a RUN.
mount_root() {
    local root="$1"
    mount -t proc proc "$root/proc"
    # Docker's standard nodes on a tmpfs of their own (never the host's /dev itself).
    mount -t tmpfs -o mode=755 dev "$root/dev"
    mknod -m 666 "$root/dev/null" c 1 3
    mknod -m 666 "$root/dev/zero" c 1 5
    mknod -m 666 "$root/dev/full" c 1 7
    mknod -m 666 "$root/dev/random" c 1 8
    mknod -m 666 "$root/dev/urandom" c 1 9
    mknod -m 666 "$root/dev/tty" c 5 0
}

# prepare ROUND PLATFORM: fresh copies of the two base trees for one platform, with what a
# RUN needs from its builder: /proc, /dev, the host's resolver, the context's hello.c.
prepare() {
    local round="$1" platform="$2" dir
    dir="$WORK/$round/${platform//\//-}"
    mkdir -p "$dir"
    cp -a "$FIXTURES/rootfs/debian/${platform//\//-}" "$dir/build"
    cp -a "$FIXTURES/rootfs/busybox/${platform//\//-}" "$dir/final"
    for root in "$dir/build" "$dir/final"; do
        mkdir -p "$root/proc" "$root/dev" "$root/etc" "$root/tmp"
        mount_root "$root"
        rm -f "$root/etc/resolv.conf"
        cp /etc/resolv.conf "$root/etc/resolv.conf"
    done
    if [ "$WORKLOAD" = service ]; then
        # The secret as the RUN's mount gives it; requirements.txt as its COPY does.
        mkdir -p "$dir/build/run/secrets"
        cp /etc/ssl/certs/ca-certificates.crt "$dir/build/run/secrets/cacert"
        cp "$REPO/benches/service/requirements.txt" "$dir/build/tmp/requirements.txt"
    else
        mkdir -p "$dir/build/src"
        cp "$REPO/benches/app/hello.c" "$dir/build/src/hello.c"
    fi
}

# in_root ROOT PLATFORM WORKDIR SCRIPT: one RUN, as the Dockerfile's shell form runs it.
in_root() {
    local root="$1" platform="$2" workdir="$3" script="$4" start status=0
    start=$(date +%s.%N)
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root TARGETARCH="${platform#*/}" TARGETPLATFORM="$platform" \
        BUILDPLATFORM="$host_platform" DEBIAN_FRONTEND=noninteractive \
        "$CHROOT" "$root" /bin/sh -c "cd $workdir && $script" || status=$?
    # Each command's own time, for comparing with a builder's step of the same command.
    printf '%s\t%s\t%s\n' "$platform" \
        "$(awk "BEGIN { printf \"%.3f\", $(date +%s.%N) - $start }")" "${script:0:60}" \
        >> "$WORK/steps"
    return "$status"
}

# The RUN lines of benches/app/Dockerfile, in order.
APT='apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*'
COMPILE='echo "building on ${BUILDPLATFORM} for ${TARGETPLATFORM} (${TARGETARCH}), uname -m: $(uname -m)" && gcc -O2 -static -DTARGETARCH="\"${TARGETARCH}\"" -o /out-hello hello.c && strip /out-hello'
FINAL='rm -f /bin/telnet /bin/ftpget /bin/ftpput && mkdir -p /app/data && chown 65534:65534 /app/data'

# The RUN lines of benches/service/Dockerfile, in order (ENV PATH and PYTHONDONTWRITEBYTECODE
# of the Dockerfile are set for the pip step, which is the only RUN after them).
SERVICE_APT='apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv && rm -rf /var/lib/apt/lists/*'
SERVICE_VENV='python3 -m venv /opt/venv'
SERVICE_PIP='export PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 && PIP_CERT=/run/secrets/cacert pip install --no-cache-dir --no-deps --only-binary=:all: --require-hashes -r /tmp/requirements.txt && rm /tmp/requirements.txt'

service_cold() {
    local dir="$1" platform="$2"
    in_root "$dir/build" "$platform" / "$SERVICE_APT"
    in_root "$dir/build" "$platform" / "$SERVICE_VENV"
    in_root "$dir/build" "$platform" / "$SERVICE_PIP"
    mkdir -p "$dir/build/app"                                   # WORKDIR /app
    cp -r "$REPO/benches/service/app/." "$dir/build/app/"       # COPY app/ ./
}

service_one_edit() {
    local dir="$1" platform="$2"
    cp -r "$REPO/benches/service/app/." "$dir/build/app/"
}

cold() {
    local dir="$1" platform="$2"
    in_root "$dir/build" "$platform" / "$APT"
    in_root "$dir/build" "$platform" /src "$COMPILE"
    cp "$dir/build/out-hello" "$dir/final/out-hello"   # COPY --from=build
    in_root "$dir/final" "$platform" / "$FINAL"
}

one_edit() {
    local dir="$1" platform="$2"
    echo "/* edit $(date +%N) */" >> "$dir/build/src/hello.c"
    in_root "$dir/build" "$platform" /src "$COMPILE"
}

# timed ROW FUNCTION ROUND: FUNCTION for every platform at once; the wall time of all.
timed() {
    local row="$1" step="$2" round="$3" start end pids=() status=0 platform
    start=$(date +%s.%N)
    for platform in "${platforms[@]}"; do
        "$step" "$WORK/$round/${platform//\//-}" "$platform" >> "$WORK/log" 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
    end=$(date +%s.%N)
    if [ "$status" != 0 ]; then
        log "FAILED: $row (see the log below)"; tail -n 30 "$WORK/log" >&2; exit 1
    fi
    local secs
    secs=$(awk "BEGIN { printf \"%.3f\", $end - $start }")
    printf '%s\tfloor\t%s\t0\n' "$row" "$secs" | tee -a "$RESULTS"
    log "$row floor: $secs s"
}

# The rows' names (bench.sh's) and the functions that run them.
if [ "$WORKLOAD" = service ]; then
    COLD_ROW=service-cold COLD_STEP=service_cold EDIT_ROW=service-one-edit EDIT_STEP=service_one_edit
else
    COLD_ROW=cold COLD_STEP=cold EDIT_ROW=one-edit EDIT_STEP=one_edit
fi
for round in $(seq "$REPEAT"); do
    log "round $round/$REPEAT: $PLATFORMS"
    if [ "$ROWS" = one-edit ]; then
        for platform in "${platforms[@]}"; do
            dir="$WORK/$round/${platform//\//-}"
            [ -d "$dir/build/tmp" ] || { log "no trees of a cold row in $dir (run --cold-only first)"; exit 2; }
            mount_root "$dir/build"
        done
    else
        for platform in "${platforms[@]}"; do prepare "$round" "$platform"; done
        sync
        timed "$COLD_ROW" "$COLD_STEP" "$round"
    fi
    if [ "$ROWS" != cold ]; then
        sync
        timed "$EDIT_ROW" "$EDIT_STEP" "$round"
    fi
    log "round $round: each command's time (platform, seconds, command):"
    sed 's/^/floor:   /' "$WORK/steps" >&2
    : > "$WORK/steps"
    unmount_under "$WORK/$round"
    [ -n "$KEEP" ] || rm -rf --one-file-system "${WORK:?}/$round"
done

python3 - "$RESULTS" >&2 <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    row, tool, secs, _ = line.rstrip("\n").split("\t")
    if tool == "floor":
        rows.setdefault(row, []).append(float(secs))
for row, times in rows.items():
    print(f"floor: {row}: median {statistics.median(times):.2f} s ({min(times):.2f}-{max(times):.2f}) of {len(times)}")
PY
