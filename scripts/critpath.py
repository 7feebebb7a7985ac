#!/usr/bin/env python3
"""Where a build's wall time goes, step by step, from its progress events.

    scripts/critpath.py [--platform linux/arm64] [--log FILE] -- xbuild build --progress=rawjson ...
    scripts/critpath.py [--platform linux/arm64] --read FILE

Runs the command (its stderr must carry `--progress=rawjson` events), stamps every line with
the seconds since the command started (kept in --log FILE, one `SECONDS JSON` a line, which
--read reads back instead of running anything), and prints one row per vertex of the
platform's chain (the vertices whose name has the platform, or every vertex with no
platform in its name), in the order they started:

  start     seconds from the command's start to the vertex's `started` event
  gap       from the latest end of a vertex of the chain before this start: the scheduler,
            the step's mounts, its cache lookup, waiting for a run slot
  setup     from `started` to the step's first line of output: the sandbox (namespaces,
            overlay, network, seccomp) and QEMU's start, plus however long the command took
            to print its first line (an upper bound of the set-up)
  run       the step's own duration as the event reports it (the sandbox's run: set-up and
            command)
  commit    from the end of the run to the `finished` event: the layer's diff_id (its tar
            hashed), the snapshot synced and renamed, the cache record
  end       seconds from the command's start to `finished`

then the tail: the last vertex's end to the command's end (the export, index and store
write), and the pulls of the bases before the platform's first step.
"""
import argparse
import json
import subprocess
import sys
import time


def read_events(lines):
    events = []
    for line in lines:
        stamp, _, text = line.partition(" ")
        try:
            event = json.loads(text)
        except ValueError:
            continue
        if isinstance(event, dict) and "event" in event:
            events.append((float(stamp), event))
    return events


def run(command, log):
    start = time.monotonic()
    stamped = []
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as child:
        for line in child.stderr:
            stamped.append(f"{time.monotonic() - start:.3f} {line.rstrip()}")
            if not line.startswith("{"):
                sys.stderr.write(line)
        code = child.wait()
    stamped.append(f"{time.monotonic() - start:.3f} {json.dumps({'event': 'exit', 'code': code})}")
    if log:
        with open(log, "w") as out:
            out.write("\n".join(stamped) + "\n")
    if code != 0:
        sys.exit(f"critpath: the command failed (exit code {code})")
    return stamped


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", default="linux/arm64")
    parser.add_argument("--log")
    parser.add_argument("--read")
    parser.add_argument("command", nargs="*")
    args = parser.parse_args()
    if args.read:
        with open(args.read) as source:
            lines = source.read().splitlines()
    elif args.command:
        lines = run(args.command, args.log)
    else:
        parser.error("a command after --, or --read FILE")
    events = read_events(lines)
    end = max(stamp for stamp, _ in events)
    vertices = {}
    for stamp, event in events:
        vertex = event.get("vertex")
        kind = event["event"]
        if kind == "started":
            vertices[vertex] = {"name": event["name"], "start": stamp, "first_log": None}
        elif vertex in vertices:
            row = vertices[vertex]
            if kind == "log" and row["first_log"] is None:
                row["first_log"] = stamp
            elif kind in ("finished", "failed"):
                row["end"] = stamp
                row["duration"] = event["duration"]
    platforms = ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/ppc64le", "linux/s390x", "linux/riscv64")
    chain = [
        row for row in vertices.values()
        if "end" in row and (args.platform in row["name"] or not any(p in row["name"] for p in platforms))
    ]
    chain.sort(key=lambda row: row["start"])
    print(f"{'start':>7} {'gap':>6} {'setup':>6} {'run':>7} {'commit':>6} {'end':>7}  vertex")
    for row in chain:
        is_step = "RUN" in row["name"]
        ended = [other["end"] for other in chain if other is not row and other["end"] <= row["start"]]
        gap = f"{row['start'] - max(ended):6.2f}" if ended else ""
        setup = f"{row['first_log'] - row['start']:6.2f}" if is_step and row["first_log"] else ""
        commit = row["end"] - row["start"] - row["duration"]
        print(f"{row['start']:7.2f} {gap:>6} {setup:>6} {row['duration']:7.2f} {commit:6.2f} "
              f"{row['end']:7.2f}  {row['name'][:90]}")
    # A one-platform build names no platform: its whole chain then counts.
    steps_end = max(row["end"] for row in chain if args.platform in row["name"] or
                    not any(p in row["name"] for p in platforms))
    print(f"tail after {args.platform}'s last vertex: {end - steps_end:.2f} s; command: {end:.2f} s")


if __name__ == "__main__":
    main()
