#!/usr/bin/env python3
"""Builds the Dockerfiles of containers/buildah's tests/bud suite with buildah and with xbuild,
for linux/amd64, and prints where the two results differ: one build failing and not the other,
files of the root file system (type, mode, owner, size, content, link target; not times), and
image config fields.

It is a tool for finding differences (the failure map of issue 15 used it), not a test: the
bud suite's own assertions live in buildah's bats files, and each difference still has to be
judged against what Docker does. Cases whose base image is not busybox, alpine or scratch are
skipped (no registry here): busybox is the fixture's, alpine is given as the same busybox image
(what runs apk fails in both builders alike).

Usage (root, after scripts/setup-host.sh and scripts/fixtures.sh build):
    scripts/bud-compare.py BUILDAH_CHECKOUT [--xbuild target/debug/xbuild] [--only NAME]...
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile

FIXTURES = os.environ.get("XBUILD_FIXTURES", "/var/cache/xbuild-fixtures/current")
BASES = {"busybox", "busybox:latest", "docker.io/library/busybox:latest", "docker.io/busybox",
         "alpine", "alpine:latest", "docker.io/alpine:latest", "scratch"}
# What buildah 1.28 leaves in an image and Docker does not: the empty files and directory it
# mounts over in a RUN, and its version label. Left out of the comparison (and counted).
BUILDAH_ONLY = {"/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/run"}
CONFIG_FIELDS = ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts",
                 "Volumes", "StopSignal", "Healthcheck", "OnBuild", "Shell"]


def run(args, timeout=600, **kwargs):
    """Runs a command; one that takes longer than `timeout` seconds is killed and reported as
    exit code 124 (buildah 1.28 hangs on some cases, e.g. cache-mount-locked: buildah#4342)."""
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as expired:
        return subprocess.CompletedProcess(args, 124, "", f"killed after {expired.timeout} s")


def dockerfiles(case_dir):
    return sorted(name for name in os.listdir(case_dir)
                  if re.match(r"^(Dockerfile|Containerfile)", name)
                  and os.path.isfile(os.path.join(case_dir, name))
                  and not name.endswith((".dockerignore", ".containerignore")))


def usable(path):
    """The FROM lines name only stages, busybox, alpine or scratch."""
    text = open(path, encoding="utf-8", errors="replace").read()
    stages = set()
    found = False
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].upper() != "FROM":
            continue
        words = [w for w in words[1:] if not w.startswith("--")]
        if not words:
            return False
        if words[0].lower() not in BASES and words[0].lower() not in stages:
            return False
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
        found = True
    return found


def tree(root):
    """path -> (type, mode, uid, gid, size, link or content hash), times left out."""
    entries = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            rel = "/" + os.path.relpath(path, root)
            if stat.S_ISLNK(info.st_mode):
                what = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    what = ("file", hashlib.sha256(handle.read()).hexdigest()[:12])
            elif stat.S_ISDIR(info.st_mode):
                what = ("dir", "")
            else:
                what = ("other", stat.S_IFMT(info.st_mode))
            size = info.st_size if what[0] == "file" else 0
            entries[rel] = (what[0], oct(info.st_mode & 0o7777), info.st_uid, info.st_gid, size,
                            what[1])
    return entries


def unpack(layout, dest):
    result = run(["umoci", "raw", "unpack", "--image", f"{layout}:img", dest])
    if result.returncode != 0:
        raise RuntimeError(f"umoci: {result.stderr.strip()}")
    return dest


def config(layout):
    result = run(["skopeo", "inspect", "--config", f"oci:{layout}:img"])
    if result.returncode != 0:
        raise RuntimeError(f"skopeo: {result.stderr.strip()}")
    return json.loads(result.stdout).get("config", {})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("buildah", help="a checkout of containers/buildah")
    parser.add_argument("--xbuild", default="target/debug/xbuild")
    parser.add_argument("--only", action="append", default=[])
    options = parser.parse_args()
    xbuild = os.path.abspath(options.xbuild)
    bud = os.path.join(options.buildah, "tests", "bud")

    work = tempfile.mkdtemp(prefix="bud-compare-")
    store = os.path.join(work, "xstore")
    shutil.copytree(os.path.join(FIXTURES, "oci"), store)
    index = json.load(open(os.path.join(store, "index.json")))
    for entry in list(index["manifests"]):
        name = entry.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
        if name == "busybox:latest":
            entry["annotations"]["org.opencontainers.image.ref.name"] = \
                "docker.io/library/busybox:latest"
            alias = json.loads(json.dumps(entry))
            alias["annotations"]["org.opencontainers.image.ref.name"] = \
                "docker.io/library/alpine:latest"
            index["manifests"].append(alias)
    json.dump(index, open(os.path.join(store, "index.json"), "w"))

    broot, brunroot = os.path.join(work, "broot"), os.path.join(work, "brunroot")
    bflags = ["--root", broot, "--runroot", brunroot, "--storage-driver", "vfs"]
    for name in ["docker.io/library/busybox:latest", "docker.io/library/alpine:latest"]:
        result = run(["skopeo", "copy", "-q", "--override-arch", "amd64",
                      f"oci:{FIXTURES}/oci:busybox:latest",
                      f"containers-storage:[vfs@{broot}+{brunroot}]{name}"])
        if result.returncode != 0:
            sys.exit(f"cannot give buildah the base image: {result.stderr}")

    differing = same = skipped = 0
    for case in sorted(os.listdir(bud)):
        case_dir = os.path.join(bud, case)
        if not os.path.isdir(case_dir) or (options.only and case not in options.only):
            continue
        for dockerfile in dockerfiles(case_dir):
            label = f"{case}/{dockerfile}"
            path = os.path.join(case_dir, dockerfile)
            if not usable(path):
                skipped += 1
                continue
            tag = "bud-" + re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
            b = run(["buildah", *bflags, "bud", "--isolation", "chroot", "--pull-never",
                     "--format", "docker", "--platform", "linux/amd64", "-t", tag,
                     "-f", path, case_dir])
            x = run([xbuild, "build", "--progress", "plain", "--platform", "linux/amd64",
                     "-t", tag, "-f", path, case_dir],
                    env=dict(os.environ, XBUILD_ROOT=store))
            notes = []
            if (b.returncode == 0) != (x.returncode == 0):
                last = lambda text: " | ".join(text.strip().splitlines()[-3:])
                notes.append(f"buildah exit {b.returncode} ({last(b.stderr)}); "
                             f"xbuild exit {x.returncode} ({last(x.stderr)})")
            elif b.returncode == 0:
                case_work = os.path.join(work, tag)
                os.makedirs(case_work)
                blayout, xlayout = os.path.join(case_work, "b"), os.path.join(case_work, "x")
                push = run(["buildah", *bflags, "push", tag, f"oci:{blayout}:img"])
                copy = run(["skopeo", "copy", "-q", f"oci:{store}:docker.io/library/{tag}:latest",
                            f"oci:{xlayout}:img"])
                if push.returncode or copy.returncode:
                    notes.append(f"export failed: {push.stderr.strip()} {copy.stderr.strip()}")
                else:
                    try:
                        btree = tree(unpack(blayout, os.path.join(case_work, "brootfs")))
                        xtree = tree(unpack(xlayout, os.path.join(case_work, "xrootfs")))
                        for rel in sorted(set(btree) | set(xtree)):
                            if rel in BUILDAH_ONLY and rel not in xtree \
                                    and btree[rel][0] in ("dir", "file") and btree[rel][4] == 0:
                                continue
                            if btree.get(rel) != xtree.get(rel):
                                notes.append(f"{rel}: buildah {btree.get(rel)}, "
                                             f"xbuild {xtree.get(rel)}")
                        bconf, xconf = config(blayout), config(xlayout)
                        labels = {k: v for k, v in (bconf.get("Labels") or {}).items()
                                  if k != "io.buildah.version"}
                        bconf["Labels"] = labels or None
                        for field in CONFIG_FIELDS:
                            if bconf.get(field) != xconf.get(field):
                                notes.append(f"config {field}: buildah {bconf.get(field)}, "
                                             f"xbuild {xconf.get(field)}")
                    except RuntimeError as error:
                        notes.append(str(error))
            if notes:
                differing += 1
                print(f"DIFF {label}")
                for note in notes[:12]:
                    print(f"    {note}")
                if len(notes) > 12:
                    print(f"    ... {len(notes) - 12} more")
            else:
                same += 1
                print(f"same {label} (both {'built' if b.returncode == 0 else 'failed'})")
            sys.stdout.flush()
    print(f"{same} same, {differing} differ, {skipped} skipped (other base images); "
          f"work directory {work}")


if __name__ == "__main__":
    main()
