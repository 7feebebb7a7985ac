//! Integration tests: they run the real `xbuild` binary, as a user would.
#![allow(
    clippy::print_stderr,
    clippy::print_stdout,
    reason = "tests print diagnostics"
)]

mod cli; // usage, --help, default subcommand, exit codes
mod crash; // SIGKILL while writing leaves the store readable
mod layout; // the store read by skopeo/umoci/docker, archives, image commands, snapshots
mod unpack; // hostile tars refused, whiteouts applied
mod util; // TestDir, the xbuild() command builder, `require` for privileged tests
