#!/usr/bin/env bash
# The test command (README.md names it; .ci/run runs it). Checks formatting and lints,
# makes the fixture base images if they are not cached yet, then runs every test.
# Set XBUILD_TEST_STRICT=1 to make tests that need root, binfmt or fixtures fail instead
# of skipping (CI does).
set -eu
cd "$(dirname "$0")/.."

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
if [ "$(id -u)" = 0 ]; then
    scripts/fixtures.sh build
fi
export XBUILD_FIXTURES="${XBUILD_FIXTURES:-/var/cache/xbuild-fixtures/current}"
cargo test --locked --all-targets "$@"
# --all-targets leaves out doc tests: the library's example (pipeline's BuildRequest) is
# compiled here, so that it follows the types it shows.
cargo test --locked --doc
