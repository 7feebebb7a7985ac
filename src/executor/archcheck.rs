//! The wrong-architecture guard: finds ELF files in a directory tree (an overlay upper
//! directory or an unpacked layer) that the image's platform cannot run natively: an amd64
//! binary copied into the arm64 image, the classic cause of `exec format error` at deploy
//! time.
//!
//! Only the first bytes of each regular file are read: the magic, then the ELF header, which
//! goblin decodes into class, byte order and machine, and [`crate::platform::elf_platform`]
//! into a platform. Only executables and shared objects (`ET_EXEC`, `ET_DYN`) are checked:
//! object files and core dumps are data, not something the image runs. A file is fine when
//! the image's platform runs it natively ([`Platform::is_native_for`]: a 386 binary in an
//! amd64 image, an arm/v7 one in an arm64 image) or when it has the same architecture (the
//! ELF header does not tell arm/v6 from arm/v7). Files of a machine xbuild does not know are
//! skipped: they are not evidence of a mistake.
//!
//! [`foreign_elf_files`] walks a directory (an overlay upper directory, an unpacked layer);
//! [`foreign_elf_in_layer`] reads a layer tar, for layers written from a file list.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::platform::{self, Platform};

use super::CheckArch;
use super::error::{ExecutorError, Within as _};
use super::state::Results;
use crate::plan::BuildGraph;
use crate::store::Store;

/// Bytes read from each file: enough for a 64-bit ELF header.
const HEADER_BYTES: usize = 64;

/// An ELF file built for a platform the image cannot run natively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignElf {
    /// The file, relative to the walked root (as in the image).
    pub path: PathBuf,
    /// What the ELF header says it is for.
    pub platform: Platform,
    /// The image's platform.
    pub expected: Platform,
}

impl fmt::Display for ForeignElf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {}, not {}",
            self.path.display(),
            self.platform,
            self.expected
        )
    }
}

/// Walks `root` (symbolic links are not followed; overlay whiteouts and other devices are
/// skipped) and returns the ELF executables and libraries `expected` cannot run natively,
/// sorted by path.
///
/// # Errors
/// A directory or file that cannot be read (the error names it).
pub fn foreign_elf_files(root: &Path, expected: &Platform) -> io::Result<Vec<ForeignElf>> {
    let mut found = Vec::new();
    walk(root, Path::new(""), expected, &mut found)?;
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

fn walk(
    dir: &Path,
    relative: &Path,
    expected: &Platform,
    found: &mut Vec<ForeignElf>,
) -> io::Result<()> {
    let entries = fs::read_dir(dir).map_err(|error| named(error, "reading", dir))?;
    for entry in entries {
        let entry = entry.map_err(|error| named(error, "reading", dir))?;
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|error| named(error, "inspecting", &path))?;
        let relative = relative.join(entry.file_name());
        if file_type.is_dir() {
            walk(&path, &relative, expected, found)?;
        } else if file_type.is_file() {
            if let Some(detected) = elf_platform_of(&path)? {
                if !is_compatible(expected, &detected) {
                    found.push(ForeignElf {
                        path: relative,
                        platform: detected,
                        expected: expected.clone(),
                    });
                }
            }
        } else if file_type.is_char_device() || file_type.is_block_device() {
            // Whiteouts (0/0 character devices) and device nodes: not programs.
        }
    }
    Ok(())
}

/// As [`foreign_elf_files`], for a layer tar (already decompressed: see
/// [`crate::layer::decompressed`]): the layers `COPY`/`ADD` write from a file list have no
/// directory to walk. Whiteouts are skipped; hard links are not followed (their target was
/// checked as a file).
///
/// # Errors
/// A malformed tar or a read error.
pub fn foreign_elf_in_layer(
    layer: impl Read,
    expected: &Platform,
) -> Result<Vec<ForeignElf>, crate::layer::read::ReadError> {
    let mut reader = crate::layer::read::TarReader::new(layer);
    let mut found = Vec::new();
    while let Some(entry) = reader.next_entry()? {
        if !matches!(entry.kind, crate::layer::EntryKind::File { .. }) {
            continue;
        }
        let header =
            read_header(&mut reader.content()).map_err(crate::layer::read::ReadError::Read)?;
        if let Some(detected) = platform_of_header(&header) {
            if !is_compatible(expected, &detected) {
                let path = entry.display_path();
                found.push(ForeignElf {
                    path: PathBuf::from(path.trim_start_matches("./").trim_start_matches('/')),
                    platform: detected,
                    expected: expected.clone(),
                });
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Up to [`HEADER_BYTES`] first bytes.
fn read_header(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut header = [0u8; HEADER_BYTES];
    let mut filled = 0;
    while filled < header.len() {
        let read = input.read(&mut header[filled..])?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(header[..filled].to_vec())
}

/// The platform of an ELF executable or shared object, `None` for anything else (not ELF,
/// too short, an object file, an unknown machine).
fn elf_platform_of(path: &Path) -> io::Result<Option<Platform>> {
    let mut file = fs::File::open(path).map_err(|error| named(error, "opening", path))?;
    let header = read_header(&mut file).map_err(|error| named(error, "reading", path))?;
    Ok(platform_of_header(&header))
}

/// The platform an ELF header's first bytes name (executables and shared objects only).
fn platform_of_header(header: &[u8]) -> Option<Platform> {
    if !header.starts_with(b"\x7fELF") {
        return None;
    }
    let parsed = goblin::elf::Elf::parse_header(header).ok()?;
    if !matches!(
        parsed.e_type,
        goblin::elf::header::ET_EXEC | goblin::elf::header::ET_DYN
    ) {
        return None;
    }
    platform::elf_platform(header).ok()
}

/// Whether an image of `expected` runs a binary of `detected` without emulation.
fn is_compatible(expected: &Platform, detected: &Platform) -> bool {
    expected.is_native_for(detected)
        || (expected.os == detected.os && expected.architecture == detected.architecture)
}

fn named(error: io::Error, action: &str, path: &Path) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("{action} {}: {error}", path.display()),
    )
}

/// The wrong-architecture guard: every ELF executable or library that the build's own layers
/// add to a target image (not its base image's) is checked against the image's platform.
/// Returns one line per finding: `[linux/arm64] COPY hello /usr/local/bin/: usr/local/bin/hello
/// is linux/amd64, not linux/arm64`.
pub(crate) fn check_images(
    store: &Store,
    graph: &BuildGraph,
    results: &Results,
    check_arch: CheckArch,
) -> Result<Vec<String>, ExecutorError> {
    if check_arch == CheckArch::Off {
        return Ok(Vec::new());
    }
    let state_of = |vertex: usize| results.get(vertex).map(|done| &done.state);
    let mut findings = Vec::new();
    let mut checked = std::collections::HashSet::new();
    for target in &graph.images {
        let Some(state) = state_of(target.vertex) else {
            continue;
        };
        // The external base: the first vertex up the parent chain that is an image or scratch.
        let mut vertex = target.vertex;
        while let Some(parent) = graph.vertices[vertex].parent {
            vertex = parent;
        }
        let base_layers = state_of(vertex).map_or(0, |base| base.layers.len());
        let added = &state.layers[base_layers.min(state.layers.len())..];
        // History entries that made layers, in order; the last ones belong to `added`.
        let layer_history: Vec<String> = state
            .config
            .history()
            .as_ref()
            .map(|history| {
                history
                    .iter()
                    .filter(|entry| !entry.empty_layer().unwrap_or(false))
                    .map(|entry| entry.created_by().clone().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        let offset = layer_history.len().saturating_sub(added.len());
        for (position, layer) in added.iter().enumerate() {
            if !checked.insert((layer.diff_id.clone(), target.platform.clone())) {
                continue;
            }
            let found = if let Some(found) = remembered(store, &layer.diff_id, &target.platform) {
                found
            } else {
                let found = match store.snapshot(&layer.diff_id) {
                    Some(snapshot) => foreign_elf_files(&snapshot, &target.platform)
                        .within(|| format!("checking {}", snapshot.display()))?,
                    // A layer of an imported cache hit, left in the cache (the build that
                    // made it checked it).
                    None => {
                        let Some(blob) = layer
                            .blob
                            .as_ref()
                            .filter(|blob| store.layout().has_blob(blob.digest()))
                        else {
                            continue;
                        };
                        let blob = store.layout().open_blob(blob.digest())?;
                        let tar = crate::layer::decompressed(std::io::BufReader::new(blob))?;
                        foreign_elf_in_layer(tar, &target.platform)?
                    }
                };
                remember(store, &layer.diff_id, &target.platform, &found);
                found
            };
            let instruction = layer_history
                .get(offset + position)
                .map_or("a layer", |created_by| {
                    created_by.trim_end_matches(" # buildkit")
                });
            for foreign in found {
                findings.push(format!("[{}] {instruction}: {foreign}", target.platform));
            }
        }
    }
    Ok(findings)
}

/// The cache record key of what the guard found in one layer for one platform.
fn memo_key(diff_id: &crate::oci::Digest, platform: &Platform) -> String {
    format!("archcheck-{platform}-{}", diff_id.digest())
}

/// What an earlier build found in the layer `diff_id` for `platform`: a function of the
/// layer's content and the platform, so it is kept as a cache record that pins nothing (a
/// pruned one only costs the walk again). Without it every cached rebuild read the first
/// bytes of every file of every layer the build made (16,000 files, 0.3 s per platform, for
/// the service bench image). A record that cannot be read is a miss.
fn remembered(
    store: &Store,
    diff_id: &crate::oci::Digest,
    platform: &Platform,
) -> Option<Vec<ForeignElf>> {
    let record = store.cache_record(&memo_key(diff_id, platform)).ok()??;
    let entries: Vec<(String, String)> = serde_json::from_value(record.data).ok()?;
    entries
        .into_iter()
        .map(|(path, found)| {
            Some(ForeignElf {
                path: PathBuf::from(path),
                platform: Platform::parse(&found).ok()?,
                expected: platform.clone(),
            })
        })
        .collect()
}

/// Keeps what the guard found (see [`remembered`]); a failure to write only costs the
/// walk next time.
fn remember(
    store: &Store,
    diff_id: &crate::oci::Digest,
    platform: &Platform,
    found: &[ForeignElf],
) {
    let entries: Vec<(String, String)> = found
        .iter()
        .map(|foreign| {
            (
                foreign.path.to_string_lossy().into_owned(),
                foreign.platform.to_string(),
            )
        })
        .collect();
    let record = crate::store::CacheRecord {
        blobs: Vec::new(),
        diff_ids: Vec::new(),
        data: serde_json::json!(entries),
    };
    let _ = store.put_cache_record(&memo_key(diff_id, platform), &record);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(name: &str) -> Platform {
        Platform::parse(name).expect("known platform")
    }

    #[test]
    fn compatibility_follows_the_platform_table() {
        assert!(is_compatible(
            &platform("linux/amd64"),
            &platform("linux/386")
        ));
        assert!(is_compatible(
            &platform("linux/arm64"),
            &platform("linux/arm/v7")
        ));
        assert!(is_compatible(
            &platform("linux/arm/v6"),
            &platform("linux/arm/v7")
        ));
        assert!(!is_compatible(
            &platform("linux/arm64"),
            &platform("linux/amd64")
        ));
        assert!(!is_compatible(
            &platform("linux/386"),
            &platform("linux/amd64")
        ));
        assert!(!is_compatible(
            &platform("linux/amd64"),
            &platform("linux/s390x")
        ));
    }

    #[test]
    fn display_names_the_file_and_both_platforms() {
        let foreign = ForeignElf {
            path: PathBuf::from("usr/local/bin/hello"),
            platform: platform("linux/amd64"),
            expected: platform("linux/arm64"),
        };
        assert_eq!(
            foreign.to_string(),
            "usr/local/bin/hello is linux/amd64, not linux/arm64"
        );
    }

    #[test]
    fn short_files_and_object_files_are_not_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("short"), b"\x7fELF\x02").expect("write");
        // A little-endian 64-bit x86-64 relocatable object (ET_REL = 1).
        let mut object = vec![0u8; 64];
        object[..4].copy_from_slice(b"\x7fELF");
        object[4] = 2;
        object[5] = 1;
        object[6] = 1;
        object[16] = 1;
        object[18] = 0x3e;
        object[52] = 64;
        fs::write(dir.path().join("main.o"), &object).expect("write");
        let found =
            foreign_elf_files(dir.path(), &platform("linux/arm64")).expect("walks the tree");
        assert!(found.is_empty(), "{found:?}");
    }
}
