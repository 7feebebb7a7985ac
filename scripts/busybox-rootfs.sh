#!/usr/bin/env bash
# Makes a minimal root filesystem from Debian's busybox-static package of one architecture,
# without touching the host's dpkg architectures (a private apt state), and without running
# the foreign binary (applet links come from the host's busybox-static of the same release).
#
#   scripts/busybox-rootfs.sh DEBIAN_ARCH DEST_DIR [APT_STATE_DIR]
#
# DEBIAN_ARCH: amd64 arm64 armhf armel ppc64el s390x i386 mips64el (bookworm has no riscv64). Used by scripts/fixtures.sh
# and scripts/demo.sh. Needs root (apt-get), dpkg-deb and /bin/busybox (busybox-static).
set -eu

arch="${1:?debian architecture}"
root="${2:?destination directory}"
state="${3:-$(mktemp -d)}"
suite="${SUITE:-bookworm}"

mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/deb"
touch "$state/status"
# Only the release's main archive: the security and updates suites are not needed for
# busybox, and a mirror mid-sync there would fail the update.
[ -f "$state/sources.list" ] || echo "deb http://deb.debian.org/debian $suite main" >"$state/sources.list"
apt() {
    apt-get -q -o "APT::Architecture=$arch" -o "APT::Architectures::=$arch" \
        -o "Dir::Etc::SourceList=$state/sources.list" -o "Dir::Etc::SourceParts=-" \
        -o "APT::Sandbox::User=root" -o "Acquire::Retries=3" \
        -o "Dir::State::Lists=$state/lists" -o "Dir::State::status=$state/status" \
        -o "Dir::Cache=$state/cache" -o "Debug::NoLocking=1" "$@"
}
apt update >/dev/null
rm -f "$state"/deb/busybox-static_*.deb
(cd "$state/deb" && apt download "busybox-static:$arch" >/dev/null)
mkdir -p "$root"
dpkg-deb -x "$state"/deb/busybox-static_*.deb "$root"
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" \
    "$root/tmp" "$root/root" "$root/proc" "$root/sys" "$root/dev" "$root/home"
chmod 1777 "$root/tmp"
chmod 700 "$root/root"
/bin/busybox --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    [ -e "$root/$applet" ] || [ -L "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
rm -rf "$root/usr/share/doc"
