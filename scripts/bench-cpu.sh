#!/usr/bin/env bash
# Where the CPU time of one cold two-platform build of a bench workload goes: xbuild's own
# threads (compression apart) against what its RUN steps run (QEMU for arm64, apt, dpkg,
# pip and the rest natively for amd64). One `perf record` (cpu-clock sampling, children
# followed) of `xbuild build` from an empty store; the samples are summed by what ran them.
# CPU seconds, not wall time: they hold on a busy machine, where wall time does not.
#
#   scripts/bench-cpu.sh [--workload service|app] [--port P] [--xbuild BINARY]
#
# Groups (by process, thread name and the mapped object a sample was in):
#   steps: arm64 under QEMU  every sample of a process that ran in qemu-*-static: QEMU
#                            itself, the guest code it translated (anonymous memory) and
#                            the kernel's time for it
#   steps: amd64 (native)    the steps' other programs (apt, dpkg, python3, pip, sh)
#   steps: slirp4netns       the user-mode network of the steps (apt's and pip's downloads)
#   xbuild: compression      the compressing threads (xbuild-gzip-N; zstd's workers:
#                            samples in zstd's code)
#   xbuild: other            every other sample of xbuild's own processes (planning,
#                            pulls, snapshots, tars and hashes, the sandbox, the store)
# The kernel's share of each group is in the group (perf attributes it to the thread).
#
# Needs root, perf, the fixtures (scripts/fixtures.sh build), binfmt_misc with
# qemu-user-static, and the network (Debian's mirror; PyPI for the service).
set -eu
cd "$(dirname "$0")/.."
REPO="$PWD"
WORKLOAD=service PORT=5056 XBUILD="$REPO/target/release/xbuild"
while [ $# -gt 0 ]; do
    case "$1" in
        --workload) WORKLOAD="$2"; shift ;;
        --port) PORT="$2"; shift ;;
        --xbuild) XBUILD="$2"; shift ;;
        *) echo "usage: $0 [--workload service|app] [--port P] [--xbuild BINARY]" >&2; exit 2 ;;
    esac
    shift
done
case "$WORKLOAD" in
    service) SECRET="--secret=id=cacert,src=/etc/ssl/certs/ca-certificates.crt" ;;
    app) SECRET="" ;;
    *) echo "$0: unknown workload $WORKLOAD" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "bench-cpu: run as root" >&2; exit 3; }
command -v perf >/dev/null || { echo "bench-cpu: perf is not installed" >&2; exit 3; }
[ -x "$XBUILD" ] || cargo build --release --locked --quiet

scripts/fixtures.sh build >&2
scripts/fixtures.sh registry start "$PORT" >&2
WORK="$(mktemp -d /var/tmp/xbuild-bench-cpu.XXXXXX)"
cleanup() {
    scripts/fixtures.sh registry stop "$PORT" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
cp -r "benches/$WORKLOAD" "$WORK/$WORKLOAD"

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s.%N)
# shellcheck disable=SC2086  # SECRET is one word or none
XBUILD_ROOT="$WORK/root" perf record -q -F 199 -e cpu-clock -o "$WORK/perf.data" -- \
    "$XBUILD" build -q --platform linux/amd64,linux/arm64 -t "bench/$WORKLOAD:1" \
    --build-arg "REG=127.0.0.1:$PORT" $SECRET "$WORK/$WORKLOAD" >&2
end=$(date +%s.%N)
echo "## CPU seconds of one cold two-platform build of benches/$WORKLOAD" \
    "($(nproc) cores, $(date -u +%F), load average $LOAD_START at the start," \
    "$(cut -d' ' -f1-3 /proc/loadavg) at the end; wall $(awk "BEGIN { printf \"%.1f\", $end - $start }") s)"
echo
perf script -i "$WORK/perf.data" -F comm,pid,period,ip,sym,dso 2>/dev/null | python3 -c '
import collections, re, sys
line_re = re.compile(r"^\s*(.+?)\s+(\d+)\s+(\d+)\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$")
rows = []
emulated = set()
for line in sys.stdin:
    m = line_re.match(line)
    if not m:
        continue
    comm, pid, period, sym, dso = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4), m.group(5)
    base = dso.rsplit("/", 1)[-1]
    if base.startswith("qemu-"):
        emulated.add(pid)
    rows.append((comm, pid, period, sym, base))
groups = collections.Counter()
top = collections.defaultdict(collections.Counter)
for comm, pid, period, sym, base in rows:
    if pid in emulated:
        group = "steps: arm64 programs under QEMU (JIT code, QEMU, their kernel time)"
    elif comm.startswith("xbuild-gzip") or "ZSTD" in sym or "zlib_rs" in sym:
        group = "xbuild: compression"
    elif comm.startswith("xbuild") or base.startswith("xbuild") or comm == "exe":
        group = "xbuild: other"
    elif comm.startswith("slirp4netns"):
        group = "steps: slirp4netns (the step network)"
    else:
        group = "steps: amd64 programs (native)"
    groups[group] += period
    top[group][comm] += period
total = sum(groups.values())
print("| group | CPU s | share | top threads (CPU s) |")
print("|---|---|---|---|")
for group, period in groups.most_common():
    names = ", ".join(f"{name} {value / 1e9:.1f}" for name, value in top[group].most_common(5))
    print(f"| {group} | {period / 1e9:.1f} | {100 * period / total:.1f} % | {names} |")
print(f"| total | {total / 1e9:.1f} | 100 % | |")
'
