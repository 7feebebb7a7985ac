//! Integration tests: they run the real `xbuild` binary, as a user would.

mod cli; // usage, --help, default subcommand, exit codes
mod util; // TestDir, the xbuild() command builder, `require` for privileged tests
