#!/usr/bin/env bash
# xbuild against the peers, measured side by side in one run on this machine, for
# linux/amd64,linux/arm64, on two workloads:
#   app      the reference workload (benches/app: a copy of ../shared/bench/app): apt-get
#            install gcc, compile a static C program, copy it into busybox
#   service  a real service image (benches/service): Debian, apt-get install python3 pip
#            venv, pip install of pinned pure-Python wheels from PyPI in one step, the app
#            copied last; ~160 MB of compressed layers per platform
#
#   scripts/bench.sh [--repeat N] [--workload app|service|all] [--files N] [--bytes B]
#                    [--no-buildkit] [--no-floor] [--no-micro] [--port P] [--priority]
#   scripts/bench.sh --workload context [--files N] [--bytes B] [--repeat N] [--no-buildkit]
#                    [--port P] [--priority]
# --priority: the bench and everything it starts (the tools' containers included) run at a
# high CPU weight (scripts/bench-priority.py: a cgroup, 256x the default weight), for a machine
# that other work shares; disk and memory bandwidth stay shared.
#
# Rows (each repeated N times, default 3; median with min-max; the service's rows are
# prefixed `service-`):
#   cold      empty store/storage: pull the bases, apt-get (and pip) under QEMU for arm64
#   cached    the same build again: every step a cache hit
#   one-edit  the app's source edited (a comment appended), then rebuilt
#   push      the two-platform result pushed to a new repository of the loopback registry
#             (`xbuild push` against `buildah manifest push --all`)
# The floor (scripts/floor.sh: the same RUN commands in a plain chroot of the same bases under
# the same QEMU, no builder; its cold row right after each of xbuild's cold rounds, its one-edit
# right before xbuild's, so that both see the same load and mirrors) gets cold and one-edit rows too, for each workload: xbuild's
# overhead over it is printed as a percentage (cold; goal <= 10 %) and in seconds (one-edit;
# goal <= 0.25 s).
# With docker.io installed, BuildKit (inside a private dockerd 20.10, one platform per command,
# no buildx) gets linux/amd64 rows beside xbuild's linux/amd64 rows.
# Each measured command starts after `sync`: one tool's fsyncs do not wait for the writeback
# of what the other tool wrote just before.
# Peak RSS: xbuild's own processes (each xbuild process, the build and each step's
# `__run-step` sandbox process, reports its VmHWM at exit through XBUILD_PEAK_RSS_FILE, one
# line naming the process; the log gives the figure of each kind), not the commands its RUN
# steps start; for buildah the largest VmHWM seen by polling the measured command's
# processes of that name every 0.1 s, for dockerd (not the command's child) the bench's own
# private dockerd. Only the measured command's own processes count: another xbuild running
# on the machine meanwhile (a test, another engineer's build) does not.
# Then the micro-benchmarks: layer commit MB/s of a ~500 MB tree (gzip, zstd), parsing a
# 10,000-line Dockerfile, a no-change context scan of 20,000 files (cargo bench); one layer of
# 1 GB (XBUILD_BENCH_LAYER_MB) on one core against every core, for gzip and zstd; and the bytes
# a two-platform build with a build node moves over SSH, into the store and with --push (the
# test nodes::a_pushing_node..., which starts the node in a network namespace of this machine).
#
# With --workload context, the big-context workload alone (issue 19 item 4; `all`, the default,
# runs it first, then app and service with their floors and the micro-benchmarks): a context made
# by scripts/make-context.py (default 100,000 source-like files, 2 GB, seeded; made once
# before any timing, in the bench's scratch directory, deleted at the end) with the
# Dockerfile `FROM busybox`, `COPY . /app`, `RUN ls /app > /app.list`, built for linux/amd64
# by xbuild, buildah and BuildKit in turn in each round (so each ratio comes from one round):
#   ctx-first      empty store/storage/cache (the busybox base pulled from the registry)
#   ctx-no-change  the same build again
#   ctx-one-file   one file in the middle of the tree edited (a line appended), rebuilt
# The page cache is left warm for every tool (the context was just written or read).
#
# Needs root, the packages of scripts/setup-host.sh, the fixtures (scripts/fixtures.sh build).
# Targets (issue 7): cold <= 0.75x buildah, cached <= 0.15x, one-edit <= 0.5x, push <= 1.2x,
# xbuild peak RSS <= 64 MiB; service (issue 19): every row <= 0.75x buildah, push <= 0.8x.
set -eu
cd "$(dirname "$0")/.."
REPO="$PWD"

LAYER_MB="${XBUILD_BENCH_LAYER_MB:-1000}"
REPEAT=3 BUILDKIT=1 FLOOR=1 MICRO=1 PRIORITY=0 PORT=5055 WORKLOAD=all CONTEXT=0 FILES=100000 BYTES=2000000000
USAGE="usage: $0 [--repeat N] [--workload app|service|all|context] [--files N] [--bytes B] [--no-buildkit] [--no-floor] [--no-micro] [--port P] [--priority]"
while [ $# -gt 0 ]; do
    case "$1" in
        --repeat) REPEAT="$2"; shift ;;
        --workload) WORKLOAD="$2"; shift ;;
        --no-buildkit) BUILDKIT=0 ;;
        --no-floor) FLOOR=0 ;;
        --no-micro) MICRO=0 ;;
        --priority) PRIORITY=1 ;;
        --port) PORT="$2"; shift ;;
        --files) FILES="$2"; shift ;;
        --bytes) BYTES="$2"; shift ;;
        *) echo "$USAGE" >&2; exit 2 ;;
    esac
    shift
done
case "$WORKLOAD" in
    app) WORKLOADS="app" ;;
    service) WORKLOADS="service" ;;
    all) WORKLOADS="app service"; CONTEXT=1 ;;
    context) WORKLOADS=""; CONTEXT=1 FLOOR=0 MICRO=0 ;;
    *) echo "$USAGE" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 3; }
log() { echo "bench: $*" >&2; }
if [ "$CONTEXT" = 1 ]; then
    # The context workload keeps each round's stores and storage until the end (never
    # deleted just before a timed build): about ten copies of the context's bytes a round
    # (the context, xbuild's snapshots and blobs, buildah's layers, BuildKit's snapshots and
    # blobs). A run of 3 rounds at 2 GB filled 37 GB on 2026-12-07: refuse before any work.
    need_kb=$(( (BYTES / 1024) * (10 * REPEAT + 1) ))
    free_kb=$(df -Pk /var/tmp | awk 'NR == 2 { print $4 }')
    if [ "$free_kb" -lt "$need_kb" ]; then
        echo "bench: the context workload ($FILES files, $BYTES bytes, $REPEAT rounds) needs about $((need_kb / 1048576)) GiB free in /var/tmp, which has $((free_kb / 1048576)) GiB: lower --repeat or --bytes, or free space" >&2
        exit 2
    fi
fi
if [ "$PRIORITY" = 1 ]; then
    python3 scripts/bench-priority.py $$ &
    log "high CPU weight for the bench's processes (scripts/bench-priority.py)"
fi

command -v buildah >/dev/null || scripts/setup-host.sh >&2
scripts/fixtures.sh build >&2
scripts/fixtures.sh registry start "$PORT" >&2
REG="127.0.0.1:$PORT"
cargo build --release --locked --quiet
if [ "$MICRO" = 1 ]; then   # compiled before any timing
    cargo bench --locked --no-run --quiet 2>/dev/null
    cargo test --release --locked --no-run --quiet --test it 2>/dev/null
fi
XBUILD="$REPO/target/release/xbuild"

WORK="$(mktemp -d /var/tmp/xbuild-bench.XXXXXX)"
DOCKERD_PID=""
cleanup() {
    [ -n "$DOCKERD_PID" ] && kill "$DOCKERD_PID" 2>/dev/null && sleep 2
    scripts/fixtures.sh registry stop "$PORT" >/dev/null 2>&1 || true
    umount -R "$WORK"/buildah-root/overlay 2>/dev/null || true
    for root in "$WORK"/trash/buildah-root.*; do umount -R "$root/overlay" 2>/dev/null || true; done
    # Whatever is still mounted below the scratch (a floor round cut short): never delete
    # through a mount.
    awk -v dir="$WORK/" 'index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r mount; do umount -l "$mount" 2>/dev/null || true; done
    rm -rf --one-file-system "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
RESULTS="$WORK/results.tsv"
: > "$RESULTS"
for workload in $WORKLOADS; do cp -r "benches/$workload" "$WORK/$workload"; done

. scripts/bench-lib.sh

PLATFORMS=linux/amd64,linux/arm64
xb() { XBUILD_ROOT="$WORK/xbuild-root" "$XBUILD" "$@"; }
bh() { buildah --root "$WORK/buildah-root" --runroot "$WORK/buildah-runroot" "$@"; }
# The current workload: its directory, image name and the file one-edit changes.
use() {
    W="$1" DIR="$WORK/$1" NAME="bench/$1:1" MANIFEST="bench$1"
    case "$1" in
        app) PREFIX="" EDITED="hello.c" COMMENT="/* edit %s %s */" SECRET="" ;;
        # pip needs the host's CA bundle where a proxy intercepts TLS (see the Dockerfile).
        service) PREFIX="service-" EDITED="app/service/wsgi.py" COMMENT="# edit %s %s"
                 SECRET="--secret=id=cacert,src=/etc/ssl/certs/ca-certificates.crt" ;;
    esac
}
xb_build() { xb build -q --platform "$1" -t "$NAME" --build-arg "REG=$REG" $SECRET "$DIR"; }
bh_build() {
    bh build -q --runtime runc --layers --platform "$1" --manifest "$MANIFEST" \
        --build-arg "REG=$REG" --tls-verify=false $SECRET "$DIR"
}
# Before a cold round, the previous round's store (xbuild) or storage (buildah) is moved aside
# into $WORK/trash, which is deleted with $WORK at the end, not deleted on the spot: on a
# file system that skips recently freed inodes when it allocates new ones (ext4 without a
# journal, as this machine's root), deleting tens of thousands of files just before a cold
# build made that build's base unpack pay seconds of kernel time in the inode allocator (see
# README, "xbuild's own time on the critical path"). A cold build is timed on an empty store,
# not on the heels of a deletion the bench made. BuildKit's cache lives in its dockerd and is
# still pruned in place.
trash() {
    [ -e "$1" ] || return 0
    mkdir -p "$WORK/trash"
    mv "$1" "$WORK/trash/$(basename "$1").$(date +%s%N)"
}
reset_xb() { trash "$WORK/xbuild-root"; }
reset_bh() {
    bh rm --all >/dev/null 2>&1 || true
    umount -R "$WORK/buildah-root/overlay" 2>/dev/null || true
    trash "$WORK/buildah-root"
    trash "$WORK/buildah-runroot"
}
restore() { cp "$REPO/benches/$W/$EDITED" "$DIR/$EDITED"; }
# BuildKit: a private dockerd 20.10 (its own data root and socket), for DOCKER_HOST.
start_dockerd() {
    log "BuildKit: starting a private dockerd"
    mkdir -p "$WORK/docker"
    dockerd --data-root "$WORK/docker/data" --exec-root "$WORK/docker/exec" \
        --pidfile "$WORK/docker/pid" --host "unix://$WORK/docker/sock" \
        --iptables=false --bridge=none > "$WORK/docker/log" 2>&1 &
    DOCKERD_PID=$!
    export DOCKER_HOST="unix://$WORK/docker/sock"
    for _ in $(seq 60); do /usr/bin/docker version >/dev/null 2>&1 && break; sleep 0.5; done
}
edit() { printf "\n$COMMENT\n" "$1" "$(date +%N)" >> "$DIR/$EDITED"; }

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
TITLE="$WORKLOADS, linux/amd64,linux/arm64 (BuildKit: linux/amd64)"
if [ "$CONTEXT" = 1 ]; then
    CTX="$WORK/ctx"
    log "making the context: $FILES files, $BYTES bytes"
    EDITED="$(python3 scripts/make-context.py "$CTX" --files "$FILES" --bytes "$BYTES")"
    xb_ctx() { xb build -q --platform linux/amd64 -t bench/ctx:1 --build-arg "REG=$REG" "$CTX"; }
    bh_ctx() {
        bh build -q --runtime runc --layers --platform linux/amd64 -t bench/ctx:1 \
            --build-arg "REG=$REG" --tls-verify=false "$CTX"
    }
    HAVE_BUILDKIT=0
    if [ "$BUILDKIT" = 1 ] && command -v dockerd >/dev/null; then
        start_dockerd
        HAVE_BUILDKIT=1
    fi
    bk_ctx() {
        DOCKER_BUILDKIT=1 /usr/bin/docker build -q --network host --platform linux/amd64 \
            -t bench/ctx:1 --build-arg "REG=$REG" "$CTX"
    }
    reset_bk() {
        /usr/bin/docker rmi -f bench/ctx:1 "$REG/busybox:latest" >/dev/null 2>&1 || true
        /usr/bin/docker builder prune -af >/dev/null 2>&1 || true
    }
    for i in $(seq "$REPEAT"); do
        log "round $i/$REPEAT: the big context, linux/amd64"
        reset_xb; measure ctx-first xbuild xbuild xb_ctx
        reset_bh; measure ctx-first buildah buildah bh_ctx
        if [ "$HAVE_BUILDKIT" = 1 ]; then reset_bk; measure ctx-first buildkit dockerd bk_ctx; fi
        measure ctx-no-change xbuild xbuild xb_ctx
        measure ctx-no-change buildah buildah bh_ctx
        if [ "$HAVE_BUILDKIT" = 1 ]; then measure ctx-no-change buildkit dockerd bk_ctx; fi
        echo "// edit $i $(date +%N)" >> "$CTX/$EDITED"
        measure ctx-one-file xbuild xbuild xb_ctx
        measure ctx-one-file buildah buildah bh_ctx
        if [ "$HAVE_BUILDKIT" = 1 ]; then measure ctx-one-file buildkit dockerd bk_ctx; fi
    done
    if [ -n "$DOCKERD_PID" ]; then
        reset_bk
        kill "$DOCKERD_PID"; wait "$DOCKERD_PID" 2>/dev/null || true; DOCKERD_PID=""
    fi
    reset_bh; reset_xb
    CONTEXT_TITLE="a context of $FILES files, $BYTES bytes (scripts/make-context.py), linux/amd64"
    if [ -n "$WORKLOADS" ]; then TITLE="$TITLE; $CONTEXT_TITLE"; else TITLE="$CONTEXT_TITLE"; fi
fi

for workload in $WORKLOADS; do
    use "$workload"
    for i in $(seq "$REPEAT"); do
        log "round $i/$REPEAT: $W, two platforms"
        restore
        reset_xb; measure "${PREFIX}cold" xbuild xbuild xb_build "$PLATFORMS"
        if [ "$FLOOR" = 1 ]; then
            # The floor's round beside xbuild's cold one: the same minutes of machine load
            # and of the mirrors' speed (both move a cold build by tens of seconds).
            log "round $i/$REPEAT: the floor of $W (its RUN commands in a plain chroot)"
            sync
            scripts/floor.sh --workload "$W" --repeat 1 --platforms "$PLATFORMS" \
                --results "$RESULTS" --keep "$WORK/trash/floor-$W-$i" --cold-only > /dev/null
        fi
        reset_bh; measure "${PREFIX}cold" buildah buildah bh_build "$PLATFORMS"
        measure "${PREFIX}cached" xbuild xbuild xb_build "$PLATFORMS"
        measure "${PREFIX}cached" buildah buildah bh_build "$PLATFORMS"
        edit "$i"
        if [ "$FLOOR" = 1 ]; then
            # The floor's one-edit right before xbuild's: the same seconds of machine load.
            sync
            scripts/floor.sh --workload "$W" --repeat 1 --platforms "$PLATFORMS" \
                --results "$RESULTS" --keep "$WORK/trash/floor-$W-$i" --one-edit-only > /dev/null
        fi
        measure "${PREFIX}one-edit" xbuild xbuild xb_build "$PLATFORMS"
        measure "${PREFIX}one-edit" buildah buildah bh_build "$PLATFORMS"
        xb tag "$NAME" "$REG/xb-$W-$i:1"
        measure "${PREFIX}push" xbuild xbuild xb push --progress=quiet "$REG/xb-$W-$i:1"
        measure "${PREFIX}push" buildah buildah bh manifest push --all --tls-verify=false -q "$MANIFEST" "docker://$REG/bh-$W-$i:1"
    done
    reset_bh
done

if [ -n "$WORKLOADS" ] && [ "$BUILDKIT" = 1 ] && command -v dockerd >/dev/null; then
    start_dockerd
    bk_build() {
        DOCKER_BUILDKIT=1 /usr/bin/docker build -q --network host --platform linux/amd64 \
            -t "$NAME" --build-arg "REG=$REG" $SECRET "$DIR"
    }
    reset_bk() {
        /usr/bin/docker rmi -f "$NAME" "$REG/debian:bookworm" "$REG/busybox:latest" >/dev/null 2>&1 || true
        /usr/bin/docker builder prune -af >/dev/null 2>&1 || true
    }
    for workload in $WORKLOADS; do
        use "$workload"
        for i in $(seq "$REPEAT"); do
            log "round $i/$REPEAT: $W, linux/amd64, xbuild and BuildKit"
            restore
            reset_xb; measure "${PREFIX}amd64-cold" xbuild xbuild xb_build linux/amd64
            reset_bk; measure "${PREFIX}amd64-cold" buildkit dockerd bk_build
            measure "${PREFIX}amd64-cached" xbuild xbuild xb_build linux/amd64
            measure "${PREFIX}amd64-cached" buildkit dockerd bk_build
            edit "$i"
            measure "${PREFIX}amd64-one-edit" xbuild xbuild xb_build linux/amd64
            measure "${PREFIX}amd64-one-edit" buildkit dockerd bk_build
        done
    done
    kill "$DOCKERD_PID"; wait "$DOCKERD_PID" 2>/dev/null || true; DOCKERD_PID=""
fi

echo
echo "## xbuild against buildah and BuildKit: $TITLE, $(nproc) cores, $(date -u +%F)," \
    "median (min-max) of $REPEAT; load average $LOAD_START at the start," \
    "$(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    row, tool, secs, kb = line.split("\t")
    rows.setdefault(row, {}).setdefault(tool, []).append((float(secs), int(kb)))
targets = {"cold": 0.75, "cached": 0.15, "one-edit": 0.5, "push": 1.2,
           "service-cold": 0.75, "service-cached": 0.75, "service-one-edit": 0.75,
           "service-push": 0.8}
def cell(samples):
    times = [s for s, _ in samples]
    return f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f})"
def rss(samples):
    return f"{max(k for _, k in samples) / 1024:.0f}"
print("| operation | xbuild s | peer | peer s | xbuild/peer | target | xbuild peak RSS MiB | peer peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|")
for row, tools in rows.items():
    xb = tools.get("xbuild")
    for peer in ("buildah", "buildkit"):
        if peer not in tools or not xb:
            continue
        ratio = statistics.median(s for s, _ in xb) / statistics.median(s for s, _ in tools[peer])
        target = targets.get(row)
        mark = "" if target is None else (f"<= {target}" + (" met" if ratio <= target else " MISSED"))
        print(f"| {row} | {cell(xb)} | {peer} | {cell(tools[peer])} | {ratio:.2f} | {mark} | {rss(xb)} | {rss(tools[peer])} |")
floors = [(row, tools) for row, tools in rows.items() if "floor" in tools and "xbuild" in tools]
if floors:
    print()
    print("Overhead over the floor (scripts/floor.sh: the same RUN commands in a plain chroot, same QEMU, platforms side by side):")
    print()
    print("| operation | xbuild s | floor s | overhead | goal |")
    print("|---|---|---|---|---|")
    for row, tools in floors:
        xb = statistics.median(s for s, _ in tools["xbuild"])
        floor = statistics.median(s for s, _ in tools["floor"])
        if row.endswith("cold"):
            over, goal = (xb / floor - 1) * 100, 10
            shown = f"{over:+.1f} %"
        else:
            over, goal = xb - floor, 0.25
            shown = f"{over:+.2f} s"
        unit = " %" if row.endswith("cold") else " s"
        mark = f"<= {goal}{unit}" + (" met" if over <= goal else " MISSED")
        print(f"| {row} | {cell(tools['xbuild'])} | {cell(tools['floor'])} | {shown} | {mark} |")
PY

if [ "$MICRO" = 1 ]; then
    echo
    echo "## Micro-benchmarks (cargo bench)"
    echo
    for bench in layer parse context check; do
        [ -e "benches/$bench.rs" ] || continue
        echo "### $bench"
        echo '```'
        cargo bench --locked --quiet --bench "$bench" 2>/dev/null | grep -v '^$' || true
        echo '```'
    done
    # One big layer on every core (issue 19 item 3: ">= 1.7x one core's speed on 2 cores"): the
    # layer bench's one-layer rows at the default levels, on a tree of LAYER_MB copied from
    # /usr, run three ways: pinned to one core with one compressing thread, then on all cores
    # with one thread and with as many threads as cores. The blob must be the same bytes every
    # way (a digest that depended on the thread count would not be reproducible).
    CORES="$(nproc)"
    echo "### one ${LAYER_MB} MB layer on one core and on ${CORES} (layer bench, XBUILD_BENCH_ROWS=one-layer)"
    echo
    layer_rows() {   # $1: how it ran; the rest: the command's prefix
        local how="$1"; shift
        env XBUILD_BENCH_ROWS=one-layer XBUILD_BENCH_MB="$LAYER_MB" XBUILD_BENCH_DIR="$WORK" "$@" \
            cargo bench --locked --quiet --bench layer 2>/dev/null |
            awk -v how="$how" '/, one layer/ { sub(",", "", $1); speed[$1] = $14 }
                /^blob digest / { print how "\t" $3 "\t" $4 "\t" speed[$3] }'
    }
    {
        layer_rows one-core XBUILD_COMPRESS_THREADS=1 taskset -c 0
        layer_rows one-thread XBUILD_COMPRESS_THREADS=1
        layer_rows all-threads XBUILD_COMPRESS_THREADS="$CORES"
    } > "$WORK/layer-scaling.tsv"
    python3 - "$WORK/layer-scaling.tsv" "$CORES" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    how, algorithm, digest, mb_s = line.split("\t")
    rows.setdefault(algorithm, {})[how] = (digest, float(mb_s))
cores = sys.argv[2]
print(f"| algorithm | one core MB/s | {cores} cores, one thread MB/s | {cores} cores, {cores} threads MB/s | speed-up over one core | goal | same blob every way |")
print("|---|---|---|---|---|---|---|")
for algorithm, ways in rows.items():
    if len(ways) != 3:
        print(f"| {algorithm} | a run failed: {sorted(ways)} |")
        continue
    speedup = ways["all-threads"][1] / ways["one-core"][1]
    same = len({blob for blob, _ in ways.values()}) == 1
    mark = ">= 1.7x " + ("met" if speedup >= 1.7 else "MISSED")
    print(f"| {algorithm} | {ways['one-core'][1]:.1f} | {ways['one-thread'][1]:.1f} | {ways['all-threads'][1]:.1f} | {speedup:.2f}x | {mark} | {'yes' if same else 'NO'} ({ways['one-core'][0][:19]}...) |")
PY

    # Build nodes keep their bytes (issue 19 item 5): byte counts, not times, from the test that
    # builds linux/arm64 on a node in a network namespace, once into the store (the node's
    # archive comes back) and once with --push (only manifests and configs come back).
    echo
    echo "### bytes over SSH, a two-platform build with a linux/arm64 build node"
    echo
    NODE_TEST=nodes::a_pushing_node_sends_back_only_manifests_and_shares_a_registry_cache
    XBUILD_FIXTURES="${XBUILD_FIXTURES:-${XBUILD_FIXTURES_CACHE:-/var/cache/xbuild-fixtures}/current}" \
        XBUILD_TEST_STRICT=1 cargo test --release --locked --quiet --test it "$NODE_TEST" \
        -- --exact --nocapture > "$WORK/nodes.log" 2>&1 || true
    python3 - "$WORK/nodes.log" <<'PY'
import re, sys
log = open(sys.argv[1]).read()
found = re.search(r"ssh bytes: store build sent (\d+) received (\d+); push sent (\d+) received (\d+)", log)
if not found or "test result: ok" not in log:
    print("the node test did not pass: see its log (kept in the bench's output below)")
    print("```"); print(log[-3000:]); print("```")
    sys.exit(0)
sent_store, received_store, sent_push, received_push = map(int, found.groups())
print("| build | sent to the node | received from the node |")
print("|---|---|---|")
print(f"| into the store (the node's archive comes back) | {sent_store:,} | {received_store:,} |")
print(f"| --push (the node pushes; manifests and configs come back) | {sent_push:,} | {received_push:,} (1/{received_store / max(received_push, 1):.0f}) |")
PY
fi
