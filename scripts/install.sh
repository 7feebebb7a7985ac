#!/usr/bin/env bash
# Installs xbuild the way a package would: the binary, shell completions (bash, zsh, fish),
# man pages (generated from the clap definitions by the binary itself) and a link that makes
# it a Docker CLI plugin (`docker xbuild build ...`).
#
#   scripts/install.sh                       # build (release) and install under /usr/local
#   PREFIX=/usr DESTDIR=/tmp/pkg scripts/install.sh   # stage a package tree
#   XBUILD_BIN=target/debug/xbuild scripts/install.sh # install an already built binary
#
# Variables: PREFIX (default /usr/local), DESTDIR (default empty: staging root prepended to
# every path), XBUILD_BIN (a built binary; default: `cargo build --release --locked`),
# DOCKER_PLUGIN_DIR (default $PREFIX/libexec/docker/cli-plugins, which the Docker CLI
# searches for PREFIX=/usr and /usr/local; for another PREFIX the script says where to link).
set -eu
cd "$(dirname "$0")/.."

prefix="${PREFIX:-/usr/local}"
destdir="${DESTDIR:-}"
plugin_dir="${DOCKER_PLUGIN_DIR:-$prefix/libexec/docker/cli-plugins}"

if [ -n "${XBUILD_BIN:-}" ]; then
    bin="$XBUILD_BIN"
else
    cargo build --release --locked
    bin=target/release/xbuild
fi
if [ ! -x "$bin" ]; then
    echo "install.sh: $bin is not an executable" >&2
    exit 2
fi

install -d "$destdir$prefix/bin" \
    "$destdir$prefix/share/bash-completion/completions" \
    "$destdir$prefix/share/zsh/site-functions" \
    "$destdir$prefix/share/fish/vendor_completions.d" \
    "$destdir$prefix/share/man/man1" \
    "$destdir$plugin_dir"
install -m 0755 "$bin" "$destdir$prefix/bin/xbuild"

installed="$destdir$prefix/bin/xbuild"
"$installed" completion bash > "$destdir$prefix/share/bash-completion/completions/xbuild"
"$installed" completion zsh > "$destdir$prefix/share/zsh/site-functions/_xbuild"
"$installed" completion fish > "$destdir$prefix/share/fish/vendor_completions.d/xbuild.fish"
man_tmp="$(mktemp -d)"
trap 'rm -rf "$man_tmp"' EXIT
"$installed" __man-pages "$man_tmp"
for page in "$man_tmp"/*.1; do
    gzip -9n < "$page" > "$destdir$prefix/share/man/man1/$(basename "$page").gz"
done

# The Docker CLI runs `docker-xbuild`; a link keeps one binary. Relative when the plugin
# directory is under PREFIX, so a staged tree (DESTDIR) stays correct once moved.
case "$plugin_dir" in
    "$prefix"/*)
        rel="${plugin_dir#"$prefix"/}"
        up="$(echo "$rel" | sed 's|[^/][^/]*|..|g')"
        target="$up/bin/xbuild"
        ;;
    *) target="$prefix/bin/xbuild" ;;
esac
ln -sfn "$target" "$destdir$plugin_dir/docker-xbuild"

echo "installed xbuild in $destdir$prefix/bin, completions, man pages, and the Docker CLI plugin"
echo "  $destdir$plugin_dir/docker-xbuild -> $target"
case "$plugin_dir" in
    /usr/libexec/docker/cli-plugins | /usr/lib/docker/cli-plugins | \
        /usr/local/libexec/docker/cli-plugins | /usr/local/lib/docker/cli-plugins) ;;
    *)
        echo "note: the Docker CLI does not search $plugin_dir; for \`docker xbuild\` link it" \
            "into ~/.docker/cli-plugins: ln -s $prefix/bin/xbuild ~/.docker/cli-plugins/docker-xbuild"
        ;;
esac
