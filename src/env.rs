//! Every environment variable xbuild reads, in one place, each documented (README.md lists
//! them from here), and the readers of those whose value is parsed in more than one place.

/// Where the store lives. Default `/var/lib/xbuild` for root, `$XDG_DATA_HOME/xbuild`
/// (or `~/.local/share/xbuild`) otherwise.
pub const XBUILD_ROOT: &str = "XBUILD_ROOT";

/// Unix time that clamps layer mtimes and sets image `created` times, for reproducible
/// output (<https://reproducible-builds.org/specs/source-date-epoch/>).
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// [`SOURCE_DATE_EPOCH`] as Unix seconds, when set and not empty ([`check`] refuses any
/// other value before a command starts).
pub fn source_date_epoch() -> Option<i64> {
    std::env::var(SOURCE_DATE_EPOCH)
        .ok()
        .and_then(|value| value.trim().parse::<i64>().ok())
}

/// Directory of the shared conformance data (tests only); default: the first
/// `shared/conformance` found walking up from the crate.
pub const XBUILD_CONFORMANCE_DIR: &str = "XBUILD_CONFORMANCE_DIR";

/// Tests: `1` turns "skipped: needs root/binfmt/fixture" into a failure (set in `.ci/run`).
pub const XBUILD_TEST_STRICT: &str = "XBUILD_TEST_STRICT";

/// Tests: directory of the fixture base images made by `scripts/fixtures.sh`.
pub const XBUILD_FIXTURES: &str = "XBUILD_FIXTURES";

/// Where Docker-style client configuration (`config.json`) is read from; default `~/.docker`.
pub const DOCKER_CONFIG: &str = "DOCKER_CONFIG";

/// The Docker engine to load images into with `--load`.
pub const DOCKER_HOST: &str = "DOCKER_HOST";

/// containerd's socket for `-o type=containerd` (as `ctr` and `nerdctl` read it).
pub const CONTAINERD_ADDRESS: &str = "CONTAINERD_ADDRESS";

/// containerd's namespace for `-o type=containerd` without `namespace=` (as `ctr` and
/// `nerdctl` read it).
pub const CONTAINERD_NAMESPACE: &str = "CONTAINERD_NAMESPACE";

/// The client's ssh agent socket, forwarded by `--ssh default`.
pub const SSH_AUTH_SOCK: &str = "SSH_AUTH_SOCK";

/// Users' home directory.
pub const HOME: &str = "HOME";

/// Base directory for user data when not root.
pub const XDG_DATA_HOME: &str = "XDG_DATA_HOME";

/// Registries (`host` or `host:port`, comma separated) where plain HTTP is allowed, as
/// `--insecure-registry` (loopback hosts always are).
pub const XBUILD_INSECURE_REGISTRIES: &str = "XBUILD_INSECURE_REGISTRIES";

/// Blobs larger than this many bytes are uploaded in chunks of this size (default 16 MiB).
pub const XBUILD_UPLOAD_CHUNK_SIZE: &str = "XBUILD_UPLOAD_CHUNK_SIZE";

/// Tests only: a prefix for the names of the binfmt_misc entries `xbuild binfmt
/// install/uninstall` manage (`<prefix>qemu-<cpu>`), so a test can register and remove its
/// own entries beside the system's. Entries with another prefix are ignored, and the
/// "already handled by another entry" check is skipped.
pub const XBUILD_BINFMT_PREFIX: &str = "XBUILD_BINFMT_PREFIX";

/// How many threads compress layer blobs (gzip blocks, zstd workers); default one per CPU
/// (at most 32). The compressed bytes, and so the digests, do not depend on it.
pub const XBUILD_COMPRESS_THREADS: &str = "XBUILD_COMPRESS_THREADS";

/// When set, each xbuild process (the command, and each step's `__run-step` sandbox process)
/// appends a line to this file at exit: its peak resident set size (`VmHWM`, kB), its
/// process id, its subcommand and its threads at exit, tab-separated (used by
/// `scripts/bench.sh`).
pub const XBUILD_PEAK_RSS_FILE: &str = "XBUILD_PEAK_RSS_FILE";

/// `1` keeps the real `fsync`/`fdatasync`/`sync_file_range`/`syncfs`/`sync` inside `RUN`
/// steps. By default they return success at once (a seccomp filter): a step's files are
/// synced once, when the store keeps them as a snapshot.
pub const XBUILD_STEP_FSYNC: &str = "XBUILD_STEP_FSYNC";

/// `0` makes a `COPY`/`ADD` of context files write every file into its snapshot. By
/// default the files it did not change are hard links to the snapshot the same step made
/// in an earlier build (same bytes, metadata and layer digest); inside later steps such a
/// file's link count (`stat`, `ls -l`) counts the other snapshot's name too.
pub const XBUILD_COPY_LINK: &str = "XBUILD_COPY_LINK";

/// Base directory for user configuration (`builders.json` of `xbuild builder`), default
/// `~/.config`.
pub const XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";

/// An ssh configuration file passed to every `ssh` run for build nodes (`ssh -F FILE`);
/// default: ssh's own (`~/.ssh/config`).
pub const XBUILD_SSH_CONFIG: &str = "XBUILD_SSH_CONFIG";

/// Registry requests: the longest wait, in seconds, for the next bytes of an answer before
/// the request is abandoned and retried (default 120; a stalled connection costs this long
/// per attempt).
pub const XBUILD_REGISTRY_TIMEOUT: &str = "XBUILD_REGISTRY_TIMEOUT";
/// Registry requests: how many times one request is tried on connection errors, `5xx` and
/// `429` answers (default 6, at most 100).
pub const XBUILD_REGISTRY_ATTEMPTS: &str = "XBUILD_REGISTRY_ATTEMPTS";

/// The value a variable read with [`switch`] has: `1` on, `0` off, `default` when unset or
/// empty. [`check`] refuses any other value before a command starts, so a typo such as
/// `XBUILD_COPY_LINK=false` is not read as "on".
pub fn switch(name: &str, default: bool) -> bool {
    match std::env::var(name).as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => default,
    }
}

/// What a variable xbuild parses accepts.
#[derive(Debug, Clone, Copy)]
enum Accepts {
    /// `0` or `1` ([`switch`]).
    Switch,
    /// A whole number in this range.
    Whole(i128, i128),
    /// A positive, finite number of seconds (fractions allowed).
    Seconds,
}

/// Every variable whose value xbuild parses, and what it accepts. An empty value is as unset.
const PARSED: &[(&str, Accepts)] = &[
    (
        SOURCE_DATE_EPOCH,
        Accepts::Whole(i64::MIN as i128, i64::MAX as i128),
    ),
    (XBUILD_STEP_FSYNC, Accepts::Switch),
    (XBUILD_COPY_LINK, Accepts::Switch),
    (XBUILD_COMPRESS_THREADS, Accepts::Whole(1, 1024)),
    (
        XBUILD_UPLOAD_CHUNK_SIZE,
        Accepts::Whole(1, u32::MAX as i128),
    ),
    (XBUILD_REGISTRY_TIMEOUT, Accepts::Seconds),
    (XBUILD_REGISTRY_ATTEMPTS, Accepts::Whole(1, 100)),
];

/// Refuses a value of a parsed variable ([`PARSED`]) that its reader could not use, before
/// any work: an option is never accepted and then ignored. The message names the variable,
/// its value and what it accepts.
///
/// # Errors
/// The first variable with a value it does not accept.
pub fn check() -> Result<(), String> {
    check_values(|name| std::env::var_os(name))
}

fn check_values(get: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<(), String> {
    for &(name, accepts) in PARSED {
        let Some(raw) = get(name) else { continue };
        let Some(value) = raw.to_str() else {
            return Err(format!(
                "environment variable {name}: the value is not UTF-8"
            ));
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let (ok, wanted) = match accepts {
            Accepts::Switch => (matches!(value, "0" | "1"), "0 or 1".to_owned()),
            Accepts::Whole(low, high) => (
                value
                    .parse::<i128>()
                    .is_ok_and(|number| (low..=high).contains(&number)),
                format!("a whole number from {low} to {high}"),
            ),
            Accepts::Seconds => (
                value
                    .parse::<f64>()
                    .is_ok_and(|seconds| seconds.is_finite() && seconds > 0.0),
                "a positive number of seconds".to_owned(),
            ),
        };
        if !ok {
            return Err(format!(
                "environment variable {name}={value:?} is not valid: it takes {wanted}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(pairs: &[(&str, &str)]) -> Result<(), String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        check_values(|name| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into())
        })
    }

    #[test]
    fn good_values_and_empty_ones_pass() {
        assert_eq!(checked(&[]), Ok(()));
        assert_eq!(
            checked(&[
                (SOURCE_DATE_EPOCH, "1700000000"),
                (XBUILD_STEP_FSYNC, "1"),
                (XBUILD_COPY_LINK, "0"),
                (XBUILD_COMPRESS_THREADS, "4"),
                (XBUILD_UPLOAD_CHUNK_SIZE, "1048576"),
                (XBUILD_REGISTRY_TIMEOUT, "2.5"),
                (XBUILD_REGISTRY_ATTEMPTS, "100"),
            ]),
            Ok(())
        );
        assert_eq!(checked(&[(SOURCE_DATE_EPOCH, "")]), Ok(()));
    }

    #[test]
    fn a_value_the_reader_cannot_use_is_refused_with_its_name() {
        for (name, value, wanted) in [
            (XBUILD_COPY_LINK, "false", "0 or 1"),
            (XBUILD_STEP_FSYNC, "yes", "0 or 1"),
            (SOURCE_DATE_EPOCH, "2023-01-01", "whole number"),
            (XBUILD_COMPRESS_THREADS, "0", "from 1 to 1024"),
            (XBUILD_REGISTRY_ATTEMPTS, "101", "from 1 to 100"),
            (XBUILD_REGISTRY_TIMEOUT, "-1", "positive number of seconds"),
            (XBUILD_UPLOAD_CHUNK_SIZE, "16M", "whole number"),
        ] {
            let error = checked(&[(name, value)]).unwrap_err();
            assert!(error.contains(name), "{error}");
            assert!(error.contains(value), "{error}");
            assert!(error.contains(wanted), "{error}");
        }
    }
}
