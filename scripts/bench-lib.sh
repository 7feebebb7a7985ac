# Shared by scripts/bench.sh and scripts/bench-ab.sh (sourced, not run): measuring one
# command's time and peak RSS into "$RESULTS". Needs WORK (a scratch directory), RESULTS
# (the results file) and a log() function.

# in_tree PID ROOT: whether process PID is ROOT or one of its descendants (builtins only:
# this runs every 0.1 s).
in_tree() {
    local pid="$1" root="$2" key value rest parent
    while [ "$pid" -gt 1 ]; do
        [ "$pid" = "$root" ] && return 0
        parent=""
        while read -r key value rest; do
            if [ "$key" = "PPid:" ]; then parent="$value"; break; fi
        done < "/proc/$pid/status" 2>/dev/null || return 1
        [ -n "$parent" ] || return 1
        pid="$parent"
    done
    return 1
}

# poll NAME OUT [ROOT]: writes the largest VmHWM (kB) of processes named NAME into OUT until
# killed; with ROOT, only of ROOT and its descendants (the measured command's own
# processes: another xbuild or buildah running on the machine at the same time, a test
# of another checkout say, is not counted).
poll() {
    local name="$1" out="$2" root="${3:-}" max=0 pid kb
    while :; do
        for pid in $(pgrep -x "$name"); do
            [ -z "$root" ] || in_tree "$pid" "$root" || continue
            kb=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
            [ -n "$kb" ] && [ "$kb" -gt "$max" ] && max="$kb"
        done
        echo "$max" > "$out"
        sleep 0.1
    done
}

# measure ROW TOOL POLLNAME COMMAND...: runs COMMAND (output to the log), appends
# "ROW TOOL SECONDS PEAK_KB" to the results. PEAK_KB is the largest of the records xbuild's
# processes write at exit (XBUILD_PEAK_RSS_FILE: one line per process, VmHWM kB, pid,
# subcommand, threads) and of the VmHWM polled from COMMAND's processes named POLLNAME
# (dockerd, which is not COMMAND's child, is polled among the bench script's own
# descendants: its private dockerd). The log line gives the figure of each kind of xbuild
# process.
measure() {
    local row="$1" tool="$2" name="$3"; shift 3
    local rss="$WORK/rss" polled="$WORK/polled" start end status=0 pid root
    : > "$rss"; echo 0 > "$polled"
    # Dirty data of the previous command (the other tool's cold build writes ~1 GB) is
    # written out first, so that neither tool pays for the other's writeback.
    sync
    start=$(date +%s.%N)
    export XBUILD_PEAK_RSS_FILE="$rss"
    "$@" >> "$WORK/log" 2>&1 &
    pid=$!
    unset XBUILD_PEAK_RSS_FILE
    root="$pid"; [ "$name" = dockerd ] && root="$$"
    poll "$name" "$polled" "$root" & local poller=$!
    wait "$pid" || status=$?
    end=$(date +%s.%N)
    kill "$poller" 2>/dev/null || true; wait "$poller" 2>/dev/null || true
    if [ "$status" != 0 ]; then
        log "FAILED ($status): $*"; tail -n 30 "$WORK/log" >&2; exit 1
    fi
    local kb secs processes
    kb=$( (cut -f1 "$rss"; cat "$polled") | sort -n | tail -n 1)
    secs=$(awk "BEGIN { printf \"%.3f\", $end - $start }")
    printf '%s\t%s\t%s\t%s\n' "$row" "$tool" "$secs" "${kb:-0}" >> "$RESULTS"
    # Per kind of process (subcommand): how many, the largest VmHWM.
    processes=$(awk -F'\t' '{ n[$3]++; if ($1 > m[$3]) m[$3] = $1 }
        END { for (c in n) { printf "%s%s %d kB (%d process%s)", sep, c, m[c], n[c], n[c] == 1 ? "" : "es"; sep = "; " } }' "$rss")
    log "$row $tool: $secs s, peak ${kb:-0} kB (polled $(cat "$polled") kB${processes:+; $processes})"
}
