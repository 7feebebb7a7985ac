//! The `xbuild` binary: everything lives in the library; this only runs it and maps the
//! outcome to an exit status.

fn main() -> std::process::ExitCode {
    xbuild::cli::main()
}
