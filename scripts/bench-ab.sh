#!/usr/bin/env bash
# Two revisions of xbuild side by side on the reference workload (benches/app, as
# scripts/bench.sh builds it), for a change that must not change the figures: a refactor is
# judged by "B/A within noise". The two binaries alternate in every round, so load from
# other work on the machine falls on both.
#
#   scripts/bench-ab.sh [--repeat N] [--cold] [--port P] BASE [HEAD]
#
# BASE and HEAD are git revisions (HEAD: the working tree when left out). Each is built in
# release mode (BASE from a temporary worktree, sharing target/ so that dependencies are not
# compiled twice). Rows (median with min-max of N rounds, default 5):
#   cold      (with --cold) empty store: pull both bases, apt-get install gcc under QEMU
#   cached    the same build again: every step a cache hit
#   one-edit  hello.c edited (a comment appended), then rebuilt
#   push      the two-platform result pushed to a new repository of the loopback registry
# Each tool has its own store, made cold once (the cold row needs the network to Debian's
# mirror, as bench.sh does). Peak RSS as in bench.sh (xbuild's own processes).
#
# Needs root, the packages of scripts/setup-host.sh, the fixtures (scripts/fixtures.sh build).
set -eu
cd "$(dirname "$0")/.."
REPO="$PWD"

REPEAT=5 COLD=0 PORT=5056
while [ $# -gt 0 ]; do
    case "$1" in
        --repeat) REPEAT="$2"; shift ;;
        --cold) COLD=1 ;;
        --port) PORT="$2"; shift ;;
        -*) echo "usage: $0 [--repeat N] [--cold] [--port P] BASE [HEAD]" >&2; exit 2 ;;
        *) break ;;
    esac
    shift
done
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 [--repeat N] [--cold] [--port P] BASE [HEAD]" >&2; exit 2; }
BASE_REV="$(git rev-parse --verify "$1^{commit}")"
HEAD_REV="${2:-}"
[ -z "$HEAD_REV" ] || HEAD_REV="$(git rev-parse --verify "$HEAD_REV^{commit}")"
[ "$(id -u)" = 0 ] || { echo "bench-ab: run as root" >&2; exit 3; }
log() { echo "bench-ab: $*" >&2; }

command -v skopeo >/dev/null || scripts/setup-host.sh >&2
scripts/fixtures.sh build >&2
scripts/fixtures.sh registry start "$PORT" >&2
REG="127.0.0.1:$PORT"

WORK="$(mktemp -d /var/tmp/xbuild-bench-ab.XXXXXX)"
TREES=()
cleanup() {
    scripts/fixtures.sh registry stop "$PORT" >/dev/null 2>&1 || true
    for tree in "${TREES[@]}"; do git worktree remove --force "$tree" 2>/dev/null || true; done
    rm -rf "$WORK" 2>/dev/null || true
}
trap cleanup EXIT

# binary REV NAME: builds REV (empty: the working tree) in release mode into $WORK/NAME/xbuild.
binary() {
    local rev="$1" name="$2" tree="$REPO"
    mkdir -p "$WORK/$name"
    if [ -n "$rev" ]; then
        tree="$WORK/tree-$name"
        git worktree add --quiet --detach "$tree" "$rev"
        TREES+=("$tree")
    fi
    log "building $name (${rev:-working tree}) in release mode"
    (cd "$tree" && CARGO_TARGET_DIR="$REPO/target" cargo build --release --locked --quiet)
    cp "$REPO/target/release/xbuild" "$WORK/$name/xbuild"
}
binary "$BASE_REV" A
binary "$HEAD_REV" B

RESULTS="$WORK/results.tsv"
: > "$RESULTS"
. scripts/bench-lib.sh
APP="$WORK/app"
cp -r benches/app "$APP"
PLATFORMS=linux/amd64,linux/arm64
run_as() { local name="$1"; shift; XBUILD_ROOT="$WORK/root-$name" "$WORK/$name/xbuild" "$@"; }
build_as() { run_as "$1" build -q --platform "$PLATFORMS" -t bench/app:1 --build-arg "REG=$REG" "$APP"; }
edit() { echo "/* edit $1 $(date +%N) */" >> "$APP/hello.c"; }

cp benches/app/hello.c "$APP/hello.c"
for name in A B; do
    log "$name: the first (cold) build"
    if [ "$COLD" = 1 ]; then
        rm -rf "$WORK/root-$name"
        measure cold "$name" xbuild build_as "$name"
    else
        build_as "$name" >> "$WORK/log" 2>&1
    fi
done
for i in $(seq "$REPEAT"); do
    log "round $i/$REPEAT"
    # The order alternates, so that neither binary always runs right after the other.
    if [ $((i % 2)) = 1 ]; then order="A B"; else order="B A"; fi
    for name in $order; do measure cached "$name" xbuild build_as "$name"; done
    edit "$i"
    for name in $order; do measure one-edit "$name" xbuild build_as "$name"; done
    for name in $order; do
        run_as "$name" tag bench/app:1 "$REG/ab-${name,,}-$i:1" >> "$WORK/log" 2>&1
        measure push "$name" xbuild run_as "$name" push --progress=quiet "$REG/ab-${name,,}-$i:1"
    done
    if [ "$COLD" = 1 ] && [ "$i" -lt "$REPEAT" ]; then
        cp benches/app/hello.c "$APP/hello.c"
        for name in $order; do
            rm -rf "$WORK/root-$name"
            measure cold "$name" xbuild build_as "$name"
        done
    fi
done

echo
echo "## xbuild A = $(git rev-parse --short "$BASE_REV"), B = ${HEAD_REV:+$(git rev-parse --short "$HEAD_REV")}${HEAD_REV:-working tree ($(git rev-parse --short HEAD)+)}: benches/app, $PLATFORMS, $(nproc) cores, $(date -u +%F), median (min-max) of $REPEAT"
echo
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    row, tool, secs, kb = line.split("\t")
    rows.setdefault(row, {}).setdefault(tool, []).append((float(secs), int(kb)))
def cell(samples):
    times = [s for s, _ in samples]
    return f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f})"
print("| operation | A s | B s | B/A | A peak RSS MiB | B peak RSS MiB |")
print("|---|---|---|---|---|---|")
for row, tools in rows.items():
    a, b = tools.get("A"), tools.get("B")
    if not a or not b:
        continue
    ratio = statistics.median(s for s, _ in b) / statistics.median(s for s, _ in a)
    peak = lambda samples: f"{max(k for _, k in samples) / 1024:.0f}"
    print(f"| {row} | {cell(a)} | {cell(b)} | {ratio:.2f} | {peak(a)} | {peak(b)} |")
PY
