//! Integration tests: they run the real `xbuild` binary, as a user would.
#![allow(
    clippy::print_stderr,
    clippy::print_stdout,
    reason = "tests print diagnostics"
)]

mod binfmt; // xbuild binfmt ls/install/uninstall, probes, register round trip
mod cli; // usage, --help, default subcommand, exit codes
mod emulate; // RUN under QEMU: Debian arm64 apt-get install
mod parse; // Dockerfile frontend: BuildKit conformance data and golden cases (debug ast/stages)
mod plan; // golden build plans through `xbuild debug plan`
mod sandbox; // the RUN sandbox on the busybox fixtures
mod util; // TestDir, the xbuild() command builder, `require` for privileged tests
