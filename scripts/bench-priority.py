#!/usr/bin/env python3
"""bench-priority.py PID: gives PID and every process that descends from it a high CPU weight,
until PID exits, so that a benchmark on a shared machine does not wait for CPU behind other
work (compiles, CI). It makes the cgroup `xbuild-bench` (cgroup v1: cpu.shares 262144 against
the default 1024; cgroup v2: cpu.weight 10000 against the default 100), puts PID in it, and
once a second moves back every descendant that another cgroup took (runc's containers, buildah's
and dockerd's own cgroups, which a fork alone would not leave in it).

What it cannot give: disk and memory bandwidth are still shared, and a process that is not a
descendant (another engineer's build) still runs at its own weight."""
import os
import sys
import time


def cgroup_dir():
    v1 = "/sys/fs/cgroup/cpu"
    if os.path.isdir(v1) and os.path.exists(os.path.join(v1, "cpu.shares")):
        path = os.path.join(v1, "xbuild-bench")
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "cpu.shares"), "w") as f:
            f.write("262144")
        return path
    v2 = "/sys/fs/cgroup"
    if os.path.exists(os.path.join(v2, "cgroup.controllers")):
        with open(os.path.join(v2, "cgroup.subtree_control"), "w") as f:
            f.write("+cpu")
        path = os.path.join(v2, "xbuild-bench")
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "cpu.weight"), "w") as f:
            f.write("10000")
        return path
    sys.exit("bench-priority: no cpu controller under /sys/fs/cgroup (neither v1 cpu nor v2)")


def parents():
    par = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
                par[int(name)] = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                pass  # gone meanwhile
    return par


def main():
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: bench-priority.py PID")
    root = int(sys.argv[1])
    procs = os.path.join(cgroup_dir(), "cgroup.procs")
    while os.path.exists(f"/proc/{root}"):
        with open(procs) as f:
            inside = {int(x) for x in f.read().split()}
        par = parents()
        for pid in par:
            if pid in inside:
                continue
            q, hops = pid, 0
            while q > 1 and q != root and hops < 128:
                q, hops = par.get(q, 0), hops + 1
            if q == root:
                try:
                    with open(procs, "w") as f:
                        f.write(str(pid))
                except OSError:
                    pass  # exited, or a kernel thread
        time.sleep(1)


if __name__ == "__main__":
    main()
