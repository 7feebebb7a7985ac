# Shared by scripts/bench.sh and scripts/bench-ab.sh (sourced, not run): measuring one
# command's time and peak RSS into "$RESULTS". Needs WORK (a scratch directory), RESULTS
# (the results file) and a log() function.

# poll NAME OUT: writes the largest VmHWM (kB) of processes named NAME into OUT until killed.
# Only the descendants of this script's shell count (BENCH_ROOT, default $$): another
# engineer's or CI's xbuild, buildah or dockerd on the same machine is not the bench's.
poll() {
    local name="$1" out="$2" max=0 pid kb
    while :; do
        for pid in $(pgrep -x "$name"); do
            descends "$pid" || continue
            kb=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
            [ -n "$kb" ] && [ "$kb" -gt "$max" ] && max="$kb"
        done
        echo "$max" > "$out"
        sleep 0.1
    done
}

# descends PID: whether PID is a descendant of BENCH_ROOT (the bench script's shell).
descends() {
    local pid="$1" root="${BENCH_ROOT:-$$}" stat
    while [ "$pid" -gt 1 ]; do
        [ "$pid" = "$root" ] && return 0
        stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
        stat="${stat##*) }"
        set -- $stat
        pid="$2"
    done
    return 1
}

# measure ROW TOOL POLLNAME COMMAND...: runs COMMAND (output to the log), appends
# "ROW TOOL SECONDS PEAK_KB" to the results.
measure() {
    local row="$1" tool="$2" name="$3"; shift 3
    local rss="$WORK/rss" polled="$WORK/polled" start end status=0
    : > "$rss"; echo 0 > "$polled"
    # Dirty data of the previous command (the other tool's cold build writes ~1 GB) is
    # written out first, so that neither tool pays for the other's writeback.
    sync
    poll "$name" "$polled" & local poller=$!
    start=$(date +%s.%N)
    export XBUILD_PEAK_RSS_FILE="$rss"
    "$@" >> "$WORK/log" 2>&1 || status=$?
    unset XBUILD_PEAK_RSS_FILE
    end=$(date +%s.%N)
    kill "$poller" 2>/dev/null || true; wait "$poller" 2>/dev/null || true
    if [ "$status" != 0 ]; then
        log "FAILED ($status): $*"; tail -n 30 "$WORK/log" >&2; exit 1
    fi
    local kb secs
    kb=$(cat "$rss" "$polled" | sort -n | tail -n 1)
    secs=$(awk "BEGIN { printf \"%.3f\", $end - $start }")
    printf '%s\t%s\t%s\t%s\n' "$row" "$tool" "$secs" "${kb:-0}" >> "$RESULTS"
    log "$row $tool: $secs s, peak ${kb:-0} kB"
}
