#!/usr/bin/env bash
# Test fixtures made without xbuild, so that xbuild's tests are judged by other tools.
#
#   scripts/fixtures.sh build              make the fixtures (cached; a no-op when ready)
#   scripts/fixtures.sh registry start P   start docker-registry on 127.0.0.1:P with the
#                                          fixture images pushed as multi-arch indexes
#   scripts/fixtures.sh registry stop P    stop it
#   scripts/fixtures.sh path               print the fixtures directory
#
# What `build` makes, under $XBUILD_FIXTURES_CACHE (default /var/cache/xbuild-fixtures), in
# a folder named after this script's version, linked as `current`:
#   oci/                      an OCI image layout (checked with skopeo) holding the refs
#                             busybox:latest   index: linux/amd64 arm64 arm/v7 ppc64le s390x 386
#                             debian:bookworm  index: linux/amd64 arm64 (mmdebstrap minbase)
#   rootfs/busybox/<os>-<arch>[-<variant>]/   the same root filesystems, unpacked
#   rootfs/debian/linux-amd64/, rootfs/debian/linux-arm64/
#   READY                     written last: the fixtures are complete
#
# Busybox comes from Debian's busybox-static package of each architecture (apt-get download
# with a private apt state, the host's dpkg architectures untouched); Debian from mmdebstrap.
# Layers are written with GNU tar and gzip -n, configs/manifests/index with python3: no
# xbuild code is involved. Needs root (device nodes and owners in the Debian root
# filesystems), apt access, binfmt handlers for arm64 (scripts/setup-host.sh).
set -eu

VERSION=3
CACHE="${XBUILD_FIXTURES_CACHE:-/var/cache/xbuild-fixtures}"
DIR="$CACHE/v$VERSION"
HERE="$(cd "$(dirname "$0")" && pwd)"

# Debian architecture names and the OCI platforms they give.
BUSYBOX_ARCHES="amd64:linux/amd64 arm64:linux/arm64 armhf:linux/arm/v7 ppc64el:linux/ppc64le s390x:linux/s390x i386:linux/386"
DEBIAN_ARCHES="amd64:linux/amd64 arm64:linux/arm64"
SUITE=bookworm

log() { echo "fixtures: $*" >&2; }

platform_dir() { echo "$1" | tr '/' '-'; }

# Writes a one-layer image for a root filesystem tarball into the layout: prints nothing;
# records "platform manifest-digest manifest-size" in $2.
add_image() { # add_image LAYER_TAR_GZ RECORD_FILE PLATFORM CMD
    python3 - "$DIR/oci" "$@" <<'PY'
import hashlib, json, os, sys, gzip
layout, layer, record, platform, cmd = sys.argv[1:6]
def put(data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    if not os.path.exists(path):
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.rename(path + ".tmp", path)
    return "sha256:" + digest, len(data)
with open(layer, "rb") as f:
    blob = f.read()
diff_id = "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
layer_digest, layer_size = put(blob)
parts = platform.split("/")
config = {
    "created": "2024-01-01T00:00:00Z",
    "architecture": parts[1],
    "os": parts[0],
    "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
               "Cmd": [cmd]},
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "scripts/fixtures.sh"}],
}
if len(parts) > 2:
    config["variant"] = parts[2]
config_digest, config_size = put(json.dumps(config, sort_keys=True).encode())
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": config_digest, "size": config_size},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest, "size": layer_size}],
}
manifest_digest, manifest_size = put(json.dumps(manifest, sort_keys=True).encode())
with open(record, "a") as f:
    f.write(f"{platform} {manifest_digest} {manifest_size}\n")
PY
}

# Writes an index of the recorded manifests and names it in index.json.
add_index() { # add_index RECORD_FILE REF
    python3 - "$DIR/oci" "$@" <<'PY'
import hashlib, json, os, sys
layout, record, ref = sys.argv[1:4]
manifests = []
for line in open(record):
    platform, digest, size = line.split()
    parts = platform.split("/")
    p = {"os": parts[0], "architecture": parts[1]}
    if len(parts) > 2:
        p["variant"] = parts[2]
    manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "digest": digest, "size": int(size), "platform": p})
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": manifests}
data = json.dumps(index, sort_keys=True).encode()
digest = hashlib.sha256(data).hexdigest()
with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
    f.write(data)
top_path = os.path.join(layout, "index.json")
top = json.load(open(top_path))
top["manifests"] = [m for m in top["manifests"]
                    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != ref]
top["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json",
                         "digest": "sha256:" + digest, "size": len(data),
                         "annotations": {"org.opencontainers.image.ref.name": ref}})
with open(top_path + ".tmp", "w") as f:
    json.dump(top, f)
os.rename(top_path + ".tmp", top_path)
PY
}

make_busybox() {
    local work="$1"
    local record="$work/busybox.records"
    : >"$record"
    for pair in $BUSYBOX_ARCHES; do
        local arch="${pair%%:*}" platform="${pair#*:}"
        local root
        root="$DIR/rootfs/busybox/$(platform_dir "$platform")"
        log "busybox-static for $platform"
        "$HERE/busybox-rootfs.sh" "$arch" "$root" "$work/apt-$arch"
        tar -C "$root" --sort=name --numeric-owner --mtime=@1704067200 -cf - . | gzip -n >"$work/layer.tar.gz"
        add_image "$work/layer.tar.gz" "$record" "$platform" /bin/sh
    done
    add_index "$record" busybox:latest
}

make_debian() {
    local work="$1"
    local record="$work/debian.records"
    : >"$record"
    for pair in $DEBIAN_ARCHES; do
        local arch="${pair%%:*}" platform="${pair#*:}" root
        root="$DIR/rootfs/debian/$(platform_dir "$platform")"
        log "debian:$SUITE minbase for $platform (mmdebstrap; under QEMU for foreign ones)"
        mmdebstrap --quiet --variant=minbase --architectures="$arch" \
            --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
            --skip=output/dev --aptopt='Acquire::Retries "3"' \
            "$SUITE" "$work/debian-$arch.tar" >"$work/mmdebstrap.log" 2>&1 \
            || { cat "$work/mmdebstrap.log" >&2; exit 1; }
        mkdir -p "$root"
        tar -C "$root" --numeric-owner --xattrs --xattrs-include='*' -xpf "$work/debian-$arch.tar"
        gzip -n -1 <"$work/debian-$arch.tar" >"$work/layer.tar.gz"
        rm -f "$work/debian-$arch.tar"
        add_image "$work/layer.tar.gz" "$record" "$platform" bash
    done
    add_index "$record" "debian:$SUITE"
}

build() {
    if [ -e "$DIR/READY" ]; then
        ln -sfn "v$VERSION" "$CACHE/current"
        return 0
    fi
    [ "$(id -u)" = 0 ] || { log "needs root"; exit 3; }
    rm -rf "$DIR"
    mkdir -p "$DIR/oci/blobs/sha256" "$DIR/rootfs"
    echo '{"imageLayoutVersion":"1.0.0"}' >"$DIR/oci/oci-layout"
    echo '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}' >"$DIR/oci/index.json"
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
    make_busybox "$WORK"
    make_debian "$WORK"
    # Outside check: skopeo must read every platform of both images.
    for ref in busybox:latest "debian:$SUITE"; do
        skopeo inspect --raw "oci:$DIR/oci:$ref" >/dev/null
        skopeo inspect --override-arch arm64 "oci:$DIR/oci:$ref" >/dev/null
    done
    date -u +%FT%TZ >"$DIR/READY"
    ln -sfn "v$VERSION" "$CACHE/current"
    log "ready in $DIR"
}

registry() { # registry start|stop PORT
    local action="$1" port="$2" state="/tmp/xbuild-fixture-registry-$2"
    case "$action" in
    start)
        build
        registry stop "$port" 2>/dev/null || true
        mkdir -p "$state/data"
        cat >"$state/config.yml" <<EOF
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $state/data}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$port}
EOF
        docker-registry serve "$state/config.yml" >"$state/log" 2>&1 &
        echo $! >"$state/pid"
        for _ in $(seq 100); do
            curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
            sleep 0.1
        done
        for ref in busybox:latest "debian:$SUITE"; do
            skopeo copy --quiet --all --dest-tls-verify=false \
                "oci:$DIR/oci:$ref" "docker://127.0.0.1:$port/$ref"
        done
        echo "$state"
        ;;
    stop)
        if [ -f "$state/pid" ]; then
            kill "$(cat "$state/pid")" 2>/dev/null || true
            rm -f "$state/pid"
        fi
        ;;
    *) echo "usage: $0 registry start|stop PORT" >&2; exit 2 ;;
    esac
}

case "${1:-}" in
build) build ;;
registry) registry "${2:-}" "${3:?port}" ;;
path) echo "$CACHE/current" ;;
*) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
