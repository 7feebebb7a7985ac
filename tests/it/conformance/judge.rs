//! Judging a built image with tools other than xbuild: `skopeo inspect` (manifest digest,
//! layers), `skopeo inspect --config` (the image config), and `skopeo copy` + `umoci unpack`
//! (the root file system, whose files are then compared with the expectations). Every check
//! returns the first difference as text; nothing here builds.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use super::case::{FileExpect, HistoryExpect, substitute};

/// An image in a store, for one platform.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    /// The store (an OCI layout).
    pub(crate) store: PathBuf,
    /// Its name in the store's `index.json` (`docker.io/library/x:tag`).
    pub(crate) reference: String,
    /// The architecture to pick from an index.
    pub(crate) arch: String,
}

impl Image {
    fn source(&self) -> String {
        format!("oci:{}:{}", self.store.display(), self.reference)
    }

    fn skopeo_json(&self, extra: &[&str]) -> Result<serde_json::Value, String> {
        let output = Command::new("skopeo")
            .arg("inspect")
            .args(extra)
            .args(["--override-arch", &self.arch])
            .arg(self.source())
            .output()
            .map_err(|e| format!("skopeo: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "skopeo inspect {} {}: {}",
                extra.join(" "),
                self.reference,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        serde_json::from_slice(&output.stdout).map_err(|e| format!("skopeo output: {e}"))
    }

    /// The image config, as skopeo reads it.
    pub(crate) fn config(&self) -> Result<serde_json::Value, String> {
        self.skopeo_json(&["--config"])
    }

    /// `skopeo inspect` of the platform's manifest: `Digest`, `Layers`, ...
    pub(crate) fn inspect(&self) -> Result<serde_json::Value, String> {
        self.skopeo_json(&[])
    }

    /// Unpacks the root file system into `dir` (skopeo copy of the platform's manifest to a
    /// layout, then `umoci raw unpack`: the layers only, no runtime config, which umoci could
    /// not make for a `USER` the image's own `/etc/passwd` lacks); returns the rootfs.
    pub(crate) fn unpack(&self, dir: &Path) -> Result<PathBuf, String> {
        let layout = dir.join("layout");
        let rootfs = dir.join("rootfs");
        let _ = std::fs::remove_dir_all(&layout);
        let _ = std::fs::remove_dir_all(&rootfs);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let output = Command::new("skopeo")
            .args(["copy", "-q", "--override-arch", &self.arch])
            .arg(self.source())
            .arg(format!("oci:{}:img", layout.display()))
            .output()
            .map_err(|e| format!("skopeo: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "skopeo copy {}: {}",
                self.reference,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let output = Command::new("umoci")
            .args(["raw", "unpack", "--image"])
            .arg(format!("{}:img", layout.display()))
            .arg(&rootfs)
            .output()
            .map_err(|e| format!("umoci: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "umoci unpack {}: {}",
                self.reference,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(rootfs)
    }
}

/// Resolves `path` inside `root` as the image would: symlinks are followed with `root` as
/// `/` (absolute targets restart from it, `..` stops at it). With `follow_last`, a link in
/// the last component is followed too. Returns the host path (which may not exist).
pub(crate) fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> PathBuf {
    let mut pending: Vec<String> = split(path);
    pending.reverse();
    let mut current: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            current.pop();
            continue;
        }
        let candidate = join(root, &current).join(&part);
        let is_last = pending.is_empty();
        let is_link =
            std::fs::symlink_metadata(&candidate).is_ok_and(|meta| meta.file_type().is_symlink());
        if is_link && (!is_last || follow_last) && hops < 40 {
            hops += 1;
            let target = std::fs::read_link(&candidate)
                .map(|target| target.to_string_lossy().into_owned())
                .unwrap_or_default();
            if target.starts_with('/') {
                current.clear();
            }
            for piece in split(&target).into_iter().rev() {
                pending.push(piece);
            }
            continue;
        }
        current.push(part);
    }
    join(root, &current)
}

fn split(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|part| match part {
            Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_owned()),
            _ => None,
        })
        .collect()
}

fn join(root: &Path, parts: &[String]) -> PathBuf {
    let mut path = root.to_owned();
    for part in parts {
        path.push(part);
    }
    path
}

fn octal(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8).map_err(|_| format!("bad octal mode {text:?} in case.toml"))
}

/// Checks one file expectation against an unpacked root file system. `earlier` gives the
/// root file system of an earlier build (by index) for the comparisons.
pub(crate) fn check_file(
    rootfs: &Path,
    expect: &FileExpect,
    vars: &BTreeMap<String, String>,
    earlier: &mut dyn FnMut(usize) -> Result<PathBuf, String>,
) -> Result<(), String> {
    let path = &expect.path;
    let at = resolve_in_root(rootfs, path, false);
    let meta = std::fs::symlink_metadata(&at);
    if expect.kind.as_deref() == Some("absent") {
        return match meta {
            Ok(_) => Err(format!("{path}: exists, expected absent")),
            Err(_) => Ok(()),
        };
    }
    let meta = meta.map_err(|_| format!("{path}: missing"))?;
    if let Some(kind) = &expect.kind {
        let actual = kind_of(&meta);
        if actual != kind {
            return Err(format!("{path}: is a {actual}, expected a {kind}"));
        }
    }
    if let Some(link) = &expect.link {
        let target = std::fs::read_link(&at)
            .map_err(|_| format!("{path}: not a symlink, expected a link to {link}"))?;
        let link = substitute(link, vars)?;
        if target != Path::new(&link) {
            return Err(format!(
                "{path}: links to {}, expected {link}",
                target.display()
            ));
        }
    }
    if let Some(mode) = &expect.mode {
        let want = octal(mode)?;
        let got = meta.permissions().mode() & 0o7777;
        if got != want {
            return Err(format!("{path}: mode {got:04o}, expected {want:04o}"));
        }
    }
    if let Some(owner) = &expect.owner {
        let got = format!("{}:{}", meta.uid(), meta.gid());
        if &got != owner {
            return Err(format!("{path}: owner {got}, expected {owner}"));
        }
    }
    if let Some(mtime) = expect.mtime {
        if meta.mtime() != mtime {
            return Err(format!("{path}: mtime {}, expected {mtime}", meta.mtime()));
        }
    }
    if let Some(other) = &expect.hardlink_of {
        let other_meta = std::fs::symlink_metadata(resolve_in_root(rootfs, other, false))
            .map_err(|_| format!("{other}: missing (hardlink_of {path})"))?;
        if (other_meta.dev(), other_meta.ino()) != (meta.dev(), meta.ino()) {
            return Err(format!("{path}: not a hard link of {other}"));
        }
    }
    let needs_content = expect.content.is_some()
        || !expect.contains.is_empty()
        || !expect.not_contains.is_empty()
        || expect.same_as_build.is_some()
        || expect.differs_from_build.is_some();
    if !needs_content {
        return Ok(());
    }
    let followed = resolve_in_root(rootfs, path, true);
    let bytes = std::fs::read(&followed).map_err(|e| format!("{path}: cannot read: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    if let Some(content) = &expect.content {
        let content = substitute(content, vars)?;
        if text != content {
            return Err(format!("{path}: content {text:?}, expected {content:?}"));
        }
    }
    for needle in &expect.contains {
        let needle = substitute(needle, vars)?;
        if !text.contains(&needle) {
            return Err(format!("{path}: {text:?} does not contain {needle:?}"));
        }
    }
    for needle in &expect.not_contains {
        let needle = substitute(needle, vars)?;
        if text.contains(&needle) {
            return Err(format!("{path}: {text:?} contains {needle:?}"));
        }
    }
    for (index, same) in [
        (expect.same_as_build, true),
        (expect.differs_from_build, false),
    ] {
        let Some(index) = index else { continue };
        let other_root = earlier(index)?;
        let other = std::fs::read(resolve_in_root(&other_root, path, true))
            .map_err(|e| format!("{path} in build {index}: {e}"))?;
        if (other == bytes) != same {
            return Err(format!(
                "{path}: {text:?} {} build {index}'s {:?}",
                if same {
                    "differs from"
                } else {
                    "is the same as"
                },
                String::from_utf8_lossy(&other)
            ));
        }
    }
    Ok(())
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_symlink() {
        "symlink"
    } else if kind.is_dir() {
        "dir"
    } else if kind.is_file() {
        "file"
    } else if kind.is_fifo() {
        "fifo"
    } else if kind.is_socket() {
        "socket"
    } else {
        "device"
    }
}

/// TOML value to JSON, with placeholders substituted in strings.
pub(crate) fn to_json(
    value: &toml::Value,
    vars: &BTreeMap<String, String>,
) -> Result<serde_json::Value, String> {
    Ok(match value {
        toml::Value::String(text) => serde_json::Value::String(substitute(text, vars)?),
        toml::Value::Integer(number) => serde_json::json!(number),
        toml::Value::Float(number) => serde_json::json!(number),
        toml::Value::Boolean(flag) => serde_json::json!(flag),
        toml::Value::Datetime(date) => serde_json::Value::String(date.to_string()),
        toml::Value::Array(items) => serde_json::Value::Array(
            items
                .iter()
                .map(|item| to_json(item, vars))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(table) => serde_json::Value::Object(
            table
                .iter()
                .map(|(key, item)| Ok((substitute(key, vars)?, to_json(item, vars)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// Checks the config expectations.
pub(crate) fn check_config(
    config: &serde_json::Value,
    equal: &BTreeMap<String, toml::Value>,
    contains: &BTreeMap<String, Vec<toml::Value>>,
    absent: &[String],
    vars: &BTreeMap<String, String>,
) -> Result<(), String> {
    for (pointer, want) in equal {
        let want = to_json(want, vars)?;
        let got = config.pointer(pointer).unwrap_or(&serde_json::Value::Null);
        if *got != want {
            return Err(format!("config {pointer}: {got}, expected {want}"));
        }
    }
    for (pointer, items) in contains {
        let got = config.pointer(pointer).unwrap_or(&serde_json::Value::Null);
        let list = got.as_array().cloned().unwrap_or_default();
        for item in items {
            let item = to_json(item, vars)?;
            if !list.contains(&item) {
                return Err(format!("config {pointer}: {got} lacks {item}"));
            }
        }
    }
    for pointer in absent {
        match config.pointer(pointer) {
            None | Some(serde_json::Value::Null) => {}
            Some(got) => return Err(format!("config {pointer}: {got}, expected absent")),
        }
    }
    Ok(())
}

/// Checks the last `expected.len()` history entries, in order; with `base_len`, the history
/// must be exactly the base's entries and then these.
pub(crate) fn check_history(
    config: &serde_json::Value,
    expected: &[HistoryExpect],
    base_len: Option<usize>,
    vars: &BTreeMap<String, String>,
) -> Result<(), String> {
    let history = config["history"].as_array().cloned().unwrap_or_default();
    if let Some(base_len) = base_len {
        if history.len() != base_len + expected.len() {
            let added: Vec<&str> = history
                .iter()
                .skip(base_len)
                .map(|entry| entry["created_by"].as_str().unwrap_or(""))
                .collect();
            return Err(format!(
                "history has {} entries after the base's, expected {}: {added:?}",
                history.len().saturating_sub(base_len),
                expected.len()
            ));
        }
    }
    if expected.is_empty() {
        return Ok(());
    }
    if history.len() < expected.len() {
        return Err(format!(
            "history has {} entries, expected at least {}",
            history.len(),
            expected.len()
        ));
    }
    let tail = &history[history.len() - expected.len()..];
    for (index, (got, want)) in tail.iter().zip(expected).enumerate() {
        let position = history.len() - expected.len() + index;
        let created_by = got["created_by"].as_str().unwrap_or("");
        if let Some(text) = &want.created_by {
            let text = substitute(text, vars)?;
            if created_by != text {
                return Err(format!(
                    "history[{position}].created_by {created_by:?}, expected {text:?}"
                ));
            }
        }
        for text in &want.created_by_contains {
            let text = substitute(text, vars)?;
            if !created_by.contains(&text) {
                return Err(format!(
                    "history[{position}].created_by {created_by:?} lacks {text:?}"
                ));
            }
        }
        for text in &want.created_by_not_contains {
            let text = substitute(text, vars)?;
            if created_by.contains(&text) {
                return Err(format!(
                    "history[{position}].created_by {created_by:?} has {text:?}"
                ));
            }
        }
        if let Some(empty) = want.empty_layer {
            let got_empty = got["empty_layer"].as_bool().unwrap_or(false);
            if got_empty != empty {
                return Err(format!(
                    "history[{position}] ({created_by:?}).empty_layer {got_empty}, expected {empty}"
                ));
            }
        }
        if let Some(comment) = &want.comment {
            let got_comment = got["comment"].as_str().unwrap_or("");
            if got_comment != comment {
                return Err(format!(
                    "history[{position}].comment {got_comment:?}, expected {comment:?}"
                ));
            }
        }
        if want.has_created && got["created"].as_str().is_none() {
            return Err(format!(
                "history[{position}] ({created_by:?}) has no created"
            ));
        }
    }
    Ok(())
}

/// Checks the config's times (RFC 3339 strings) against seconds since the epoch; a `*`
/// segment of the pointer stands for every element of an array.
pub(crate) fn check_times(
    config: &serde_json::Value,
    times: &BTreeMap<String, i64>,
) -> Result<(), String> {
    for (pointer, want) in times {
        let mut values = vec![(String::new(), config)];
        for segment in pointer.split('/').skip(1) {
            let mut next = Vec::new();
            for (at, value) in values {
                if segment == "*" {
                    for (index, item) in value.as_array().into_iter().flatten().enumerate() {
                        next.push((format!("{at}/{index}"), item));
                    }
                } else if let Some(item) = value.get(segment) {
                    next.push((format!("{at}/{segment}"), item));
                } else if let Some(item) = segment.parse::<usize>().ok().and_then(|i| value.get(i))
                {
                    next.push((format!("{at}/{segment}"), item));
                } else {
                    return Err(format!(
                        "config {at}/{segment}: absent, expected time {want}"
                    ));
                }
            }
            values = next;
        }
        if values.is_empty() {
            return Err(format!(
                "config {pointer}: nothing there, expected time {want}"
            ));
        }
        for (at, value) in values {
            let text = value.as_str().unwrap_or("");
            match parse_rfc3339(text) {
                Some(got) if got == *want => {}
                _ => return Err(format!("config {at}: {text:?}, expected time {want}")),
            }
        }
    }
    Ok(())
}

/// Seconds since the epoch of an RFC 3339 time (`2023-11-14T22:13:21Z`, with an optional
/// fraction and a `Z` or `±hh:mm` offset).
fn parse_rfc3339(text: &str) -> Option<i64> {
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let mut rest = text.get(19..)?;
    if let Some(fraction) = rest.strip_prefix('.') {
        rest = fraction.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = if rest == "Z" {
        0
    } else {
        let sign = match rest.chars().next()? {
            '+' => 1,
            '-' => -1,
            _ => return None,
        };
        let hours = rest.get(1..3)?.parse::<i64>().ok()?;
        let minutes = rest.get(4..6)?.parse::<i64>().ok()?;
        sign * (hours * 3600 + minutes * 60)
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

#[test]
fn rfc3339_times_parse() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_rfc3339("2023-11-14T22:13:21Z"), Some(1_700_000_001));
    assert_eq!(parse_rfc3339("2023-11-14T22:13:21.5Z"), Some(1_700_000_001));
    assert_eq!(
        parse_rfc3339("2023-11-15T00:13:21+02:00"),
        Some(1_700_000_001)
    );
    assert_eq!(parse_rfc3339("2015-10-21T07:28:00Z"), Some(1_445_412_480));
    assert_eq!(parse_rfc3339("yesterday"), None);
}

#[test]
fn links_resolve_inside_the_root() {
    let temp = crate::util::temp_dir();
    let root = temp.path();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("usr/bin/sh"), "x").unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::os::unix::fs::symlink("/../../etc", root.join("usr/up")).unwrap();
    assert_eq!(
        resolve_in_root(root, "/bin/sh", false),
        root.join("usr/bin/sh")
    );
    assert_eq!(resolve_in_root(root, "/bin", false), root.join("bin"));
    assert_eq!(resolve_in_root(root, "/bin", true), root.join("usr/bin"));
    assert_eq!(
        resolve_in_root(root, "/usr/up/x", false),
        root.join("etc/x")
    );
}
