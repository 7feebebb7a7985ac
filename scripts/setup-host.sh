#!/usr/bin/env bash
# Installs what xbuild's tests and examples need on a Debian 12 host (as root), mounts
# binfmt_misc and enables the QEMU handlers. Safe to run again. Run by .ci/run.
set -eu

# python3-venv, npm, golang-go and binutils are for the attestation tests: a venv with the
# SPDX and in-toto validators from PyPI, npm and pip installs to scan, a Go binary with a
# vendored module, objcopy to read cargo-auditable's section.
# gcc-aarch64-linux-gnu builds the attack probes of tests/it/security.rs for arm64.
packages="qemu-user-static binfmt-support docker-registry skopeo umoci mmdebstrap arch-test
busybox-static buildah openssl apache2-utils iproute2 file libcap2-bin docker.io curl
openssh-server openssh-client python3-venv golang-go binutils git man-db slirp4netns gcc gcc-aarch64-linux-gnu libc6-dev-arm64-cross
libc6-dev zstd python3 bzip2 xz-utils containerd runc"
missing=""
for package in $packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $package"
done
# Debian's npm conflicts with a Node.js that ships its own npm (NodeSource's nodejs, as on
# the CI machines): installing it there fails with "held broken packages". Any npm will do.
if ! command -v npm >/dev/null 2>&1; then
    missing="$missing npm"
fi
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# The registry package starts a service on :5000 on some hosts; tests start their own.
systemctl disable --now docker-registry >/dev/null 2>&1 || true
# docker.io is only there so tests can check `docker load` of our archives; they start their
# own dockerd on a private socket (installs in ~20 s, starts in ~2 s here).
systemctl disable --now docker.service docker.socket >/dev/null 2>&1 || true
# containerd (Debian's 1.6, with ctr; docker.io pulls it in too) and runc are for -o
# type=containerd's test, which starts its own containerd with its own root, state and
# socket, and never uses the system's.
# openssh-server is there for the build-node tests, which run their own sshd in a network
# namespace; the system's is not needed.
systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true

if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable >/dev/null 2>&1 || true
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    echo "setup-host: qemu-aarch64 is not registered in binfmt_misc" >&2
    exit 1
fi
