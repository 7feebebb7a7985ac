//! `xbuild prune` and `xbuild du`: the build cache as `docker buildx prune` and `docker
//! buildx du` show and clear it, over the local store.
//!
//! This module parses buildx's flags (filters, sizes, durations) into a
//! [`PrunePolicy`] and prints; what is removed, and when it is safe, is the store's
//! ([`crate::store::Store::prune`]).

use std::time::{Duration, SystemTime};

use clap::Args;

use super::image::{human_size, open_store, table};
use super::output;
use crate::error::Failure;
use crate::store::{CacheEntry, PrunePolicy, RecordType};

/// `xbuild prune`: removes the build cache (cache records, cache mounts) and everything no
/// named image needs.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Keep the build cache; remove only what nothing refers to.
    #[arg(long, conflicts_with_all = ["filter", "all", "reserved_space", "max_used_space", "min_free_space"])]
    pub keep_cache: bool,
    /// Include internal and frontend records (xbuild keeps none: the same as without).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Filter values, as buildx: `until=DURATION` (keep what was used within it; also
    /// `unused-for=`), `type=TYPE` or `type!=TYPE` (regular, exec.cachemount, source.local,
    /// source.git.checkout, internal, frontend). Repeatable.
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Amount of disk space always allowed to keep for cache (e.g. 512mb, 2gb).
    #[arg(long, visible_alias = "keep-storage", value_name = "SIZE", value_parser = parse_size)]
    pub reserved_space: Option<u64>,
    /// Maximum amount of disk space the cache may keep: least recently used first goes.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_used_space: Option<u64>,
    /// Target amount of free disk space (on the store's file system) after pruning.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub min_free_space: Option<u64>,
    /// Do not prompt for confirmation (xbuild never prompts).
    #[arg(short = 'f', long)]
    pub force: bool,
    /// List every removed cache entry.
    #[arg(long)]
    pub verbose: bool,
}

impl PruneArgs {
    /// Prunes.
    ///
    /// # Errors
    /// A bad filter or size (exit 2, before anything is removed), a busy store, or files
    /// that cannot be removed.
    pub fn run(self) -> anyhow::Result<()> {
        let store = open_store()?;
        let (report, removed) = if self.keep_cache {
            (store.gc(false)?, Vec::new())
        } else {
            let policy = self.policy()?;
            store.prune(&policy)?
        };
        if self.verbose {
            for entry in &removed {
                print_entry(entry);
            }
        }
        output::stdout(format!(
            "Removed {} cache records, {} cache mounts, {} blobs, {} snapshots; reclaimed {}",
            report.cache_records,
            report.cache_mounts,
            report.blobs,
            report.snapshots,
            human_size(report.bytes)
        ));
        if report.referrers > 0 {
            output::stdout(format!(
                "Removed {} referrers (attestations) of images no longer in the store",
                report.referrers
            ));
        }
        Ok(())
    }

    fn policy(&self) -> Result<PrunePolicy, Failure> {
        let mut policy = parse_filters(&self.filter)?;
        policy.reserved_space = self.reserved_space.unwrap_or(0);
        policy.max_used_space = self.max_used_space.unwrap_or(0);
        policy.min_free_space = self.min_free_space.unwrap_or(0);
        Ok(policy)
    }
}

/// The filter keys `prune --filter` takes.
const FILTER_KEYS: &str = "until, unused-for, type, type!";

/// Reads `--filter` values into a policy (sizes left at 0).
fn parse_filters(filters: &[String]) -> Result<PrunePolicy, Failure> {
    let mut policy = PrunePolicy::default();
    for filter in filters {
        let Some((key, value)) = filter.split_once('=') else {
            return Err(Failure::bad_input(format_args!(
                "--filter {filter}: expected KEY=VALUE (keys: {FILTER_KEYS})"
            )));
        };
        match key {
            "until" | "unused-for" => {
                if policy.keep_duration.is_some() {
                    return Err(Failure::bad_input(format_args!(
                        "--filter {filter}: \"until\" expects only one value"
                    )));
                }
                let duration = parse_duration(value).map_err(|error| {
                    Failure::bad_input(format_args!(
                        "--filter {filter}: {error} (a duration such as 24h, 2h30m, 90s)"
                    ))
                })?;
                policy.keep_duration = Some(duration);
            }
            "type" | "type!" => {
                let kind = RecordType::parse(value).ok_or_else(|| {
                    let known: Vec<&str> = RecordType::ALL.iter().map(|k| k.name()).collect();
                    Failure::bad_input(format_args!(
                        "--filter {filter}: unknown record type {value:?} (known: {})",
                        known.join(", ")
                    ))
                })?;
                if key == "type" {
                    policy.types.push(kind);
                } else {
                    policy.excluded_types.push(kind);
                }
            }
            _ => {
                return Err(Failure::bad_input(format_args!(
                    "--filter {filter}: unknown filter {key:?} (known: {FILTER_KEYS})"
                )));
            }
        }
    }
    Ok(policy)
}

/// A size as Docker's `--keep-storage` reads it (`units.RAMInBytes`): a number with an
/// optional `b`, `k`, `m`, `g`, `t`, `p` unit (any case, `kb`/`kib` alike), in multiples
/// of 1024.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?} (e.g. 512mb, 2gb)"))?;
    let unit = unit.trim_start();
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let power = match unit {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => {
            return Err(format!(
                "invalid size {text:?}: unknown unit (b, k, m, g, t, p)"
            ));
        }
    };
    let bytes = value * 1024f64.powi(power);
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("invalid size {text:?}"));
    }
    Ok(bytes as u64)
}

/// A duration as Go's `time.ParseDuration` reads it: a sequence of decimal numbers with a
/// unit each (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), such as `24h` or `2h45m30.5s`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut seconds = 0f64;
    if rest.is_empty() {
        return Err("empty duration".to_owned());
    }
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {text:?}"))?;
        let (number, tail) = rest.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("unknown unit {unit:?} in duration {text:?}")),
        };
        seconds += value * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("invalid duration {text:?}"))
}

/// A duration as Docker prints "last used" times (`units.HumanDuration`).
fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let minutes = seconds / 60;
    let hours = minutes / 60;
    match seconds {
        0 => "Less than a second".to_owned(),
        1 => "1 second".to_owned(),
        2..60 => format!("{seconds} seconds"),
        60..120 => "About a minute".to_owned(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours < 2 => "About an hour".to_owned(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

/// One entry as `docker buildx du --verbose` prints a record.
fn print_entry(entry: &CacheEntry) {
    let ago = SystemTime::now()
        .duration_since(entry.last_used)
        .unwrap_or_default();
    let mut rows = vec![
        vec!["ID:".to_owned(), entry.id.clone()],
        vec![
            "Mutable:".to_owned(),
            (entry.kind == RecordType::ExecCacheMount).to_string(),
        ],
        vec!["Reclaimable:".to_owned(), "true".to_owned()],
        vec!["Shared:".to_owned(), entry.shared.to_string()],
        vec!["Size:".to_owned(), human_size(entry.size)],
    ];
    if let Some(description) = &entry.description {
        rows.push(vec!["Description:".to_owned(), description.clone()]);
    }
    rows.push(vec![
        "Last used:".to_owned(),
        format!("{} ago", human_duration(ago)),
    ]);
    rows.push(vec!["Type:".to_owned(), entry.kind.name().to_owned()]);
    table(&rows);
    output::stdout("");
}

/// `xbuild du`: what images, the build cache and snapshots take.
#[derive(Debug, Args)]
pub struct DuArgs {
    /// List every build-cache entry (records and cache mounts) first, as `buildx du
    /// --verbose`.
    #[arg(long)]
    pub verbose: bool,
}

impl DuArgs {
    /// Prints disk usage by kind.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn run(self) -> anyhow::Result<()> {
        let store = open_store()?;
        if self.verbose {
            for entry in store.cache_entries()? {
                print_entry(&entry);
            }
        }
        let usage = store.disk_usage()?;
        let row = |kind: &str, (count, bytes): (u64, u64), note: &str| {
            vec![
                kind.to_owned(),
                count.to_string(),
                human_size(bytes),
                note.to_owned(),
            ]
        };
        table(&[
            ["TYPE", "COUNT", "SIZE", "RECLAIMABLE BY"]
                .map(str::to_owned)
                .to_vec(),
            row("Image blobs", usage.image_blobs, "xbuild rmi, then prune"),
            row("Build cache blobs", usage.cache_blobs, "xbuild prune"),
            row(
                "Unreferenced blobs",
                usage.unreferenced_blobs,
                "xbuild prune --keep-cache",
            ),
            row("Snapshots", usage.snapshots, ""),
            row(
                "  of which unreferenced",
                usage.unreferenced_snapshots,
                "xbuild prune --keep-cache",
            ),
            row("Cache records", (usage.cache_records, 0), "xbuild prune"),
            row(
                "Cache mounts",
                usage.cache_mounts,
                "xbuild prune --filter type=exec.cachemount",
            ),
            row(
                "Gzip block maps",
                usage.block_maps,
                "xbuild prune (with their blobs)",
            ),
            row(
                "Temporary files",
                (0, usage.tmp_bytes),
                "xbuild prune --keep-cache",
            ),
        ]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_docker_reads_them() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("128mb"), Ok(128 << 20));
        assert_eq!(parse_size("2GB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("10 MiB"), Ok(10 << 20));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5xb").is_err());
    }

    #[test]
    fn durations_read_as_go_reads_them() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("2h30m"), Ok(Duration::from_secs(9000)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("24").is_err());
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn filters_become_a_policy_and_unknown_ones_are_refused() {
        let policy = parse_filters(&[
            "until=1h".to_owned(),
            "type=exec.cachemount".to_owned(),
            "type!=regular".to_owned(),
        ])
        .unwrap();
        assert_eq!(policy.keep_duration, Some(Duration::from_secs(3600)));
        assert_eq!(policy.types, [RecordType::ExecCacheMount]);
        assert_eq!(policy.excluded_types, [RecordType::Regular]);
        let error = parse_filters(&["type=bogus".to_owned()]).unwrap_err();
        assert!(
            error.to_string().contains(
                "known: internal, frontend, source.local, source.git.checkout, exec.cachemount, regular"
            ),
            "{error}"
        );
        let error = parse_filters(&["label=x".to_owned()]).unwrap_err();
        assert!(
            error.to_string().contains("unknown filter \"label\""),
            "{error}"
        );
        assert!(parse_filters(&["until=1h".to_owned(), "unused-for=2h".to_owned()]).is_err());
    }

    #[test]
    fn human_durations_match_dockers() {
        assert_eq!(human_duration(Duration::from_secs(0)), "Less than a second");
        assert_eq!(human_duration(Duration::from_secs(30)), "30 seconds");
        assert_eq!(human_duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(600)), "10 minutes");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600)), "3 hours");
        assert_eq!(human_duration(Duration::from_secs(3 * 86400)), "3 days");
    }
}
