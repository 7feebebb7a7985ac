#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine as root: installs QEMU user emulation if it is
# missing, builds xbuild, makes a base image per architecture from Debian's busybox-static
# package with `xbuild import`, builds examples/hello for linux/amd64 and linux/arm64 into
# the local store, and runs the result on each platform (the arm64 one under QEMU): the
# lines end with "running on x86_64 ..." and "running on aarch64 ...".
#
#   scripts/demo.sh            (store: $XBUILD_ROOT, default /var/lib/xbuild)
set -eu
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "demo: run as root (builds need namespaces and overlayfs)" >&2; exit 3; }
if ! command -v qemu-aarch64-static >/dev/null || ! command -v update-binfmts >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        qemu-user-static binfmt-support busybox-static >/dev/null
fi
command -v busybox >/dev/null || apt-get install -y -qq busybox-static >/dev/null
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc

cargo build --release --quiet
xbuild="$PWD/target/release/xbuild"
"$xbuild" binfmt install arm64 || true   # registers qemu-aarch64 unless a handler exists

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for arch in amd64 arm64; do
    scripts/busybox-rootfs.sh "$arch" "$work/rootfs-$arch" "$work/apt-$arch"
    "$xbuild" import --platform "linux/$arch" --change 'CMD ["/bin/sh"]' \
        "$work/rootfs-$arch" "xbuild-demo/busybox:$arch" >/dev/null
done

"$xbuild" build --progress=plain --platform linux/amd64,linux/arm64 -t xbuild-demo/hello:latest examples/hello
for platform in linux/amd64 linux/arm64; do
    echo "--- xbuild run --platform $platform xbuild-demo/hello:latest"
    "$xbuild" run --rm --platform "$platform" xbuild-demo/hello:latest
done
