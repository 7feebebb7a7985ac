//! Content checksums of what a step reads from another stage or image, modification times
//! left out, as BuildKit's `cache/contenthash`: a `COPY --from`'s selected sources (its
//! second cache key, [`super::copy`]) and what a `RUN --mount=from=` mounts
//! ([`super::mounts`]).
//!
//! Per item, the header its layer entry would get — the path below the source, the type,
//! the mode, the owner, the size, a link's target, a device's numbers, the recorded xattrs
//! ([`layer::entry_from_stat`], so the checksum holds what the copy writes) — then a regular
//! file's content digest, or, for a file that is a hard link to one selected before it, the
//! first one's path. `mtime`, `atime` and `ctime` are never read: a stage rebuilt to the
//! same files (a program compiled again) gives the same checksum.
//!
//! Cost: every selected file is read once (sha256, about the speed of reading it from the
//! page cache); a cache hit on the step's first key reads nothing.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use super::error::{ExecutorError, Within as _};
use super::sources::{Item, Selected};
use crate::layer::{self, EntryKind};
use crate::oci::Digester;

/// The checksum of what `selections` select (one after the other, in order, each item with
/// its path below the destination and its hard links among the items of its source).
///
/// # Errors
/// An item cannot be read.
pub(crate) fn of_selections(selections: &[Selected]) -> Result<String, ExecutorError> {
    let mut digester = Digester::default();
    for (index, selected) in selections.iter().enumerate() {
        digester.update(format!("source {index} {}\n", selected.len()).as_bytes());
        // Another stage's or image's files: never a run of the build context's entries.
        let links = selected.hardlinks(None)?;
        selected.each(None, |at, below, item| {
            item_into(
                &mut digester,
                below,
                item,
                links.get(&at).map(AsRef::as_ref),
            )
        })?;
    }
    Ok(digester.finish().0.to_string())
}

/// The checksum of what is at `path` (a file, a link, or a directory and everything below
/// it), or of its absence.
///
/// # Errors
/// Something below `path` cannot be read.
pub(crate) fn of_path(path: &Path) -> Result<String, ExecutorError> {
    let mut digester = Digester::default();
    match fs::symlink_metadata(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => digester.update(b"missing"),
        Err(error) => return Err(error).within(|| format!("reading {}", path.display())),
        Ok(meta) => {
            let top = Item::host(Path::new("").to_path_buf(), path.to_path_buf())?;
            item_into(&mut digester, Path::new(""), &top, None)?;
            if meta.is_dir() {
                let mut items = Vec::new();
                super::sources::walk_dir(path, Path::new(""), &mut items)?;
                for item in &items {
                    item_into(&mut digester, &item.rel, item, None)?;
                }
            }
        }
    }
    Ok(digester.finish().0.to_string())
}

/// One item: its header line, then its content (a regular file's bytes, or the path of the
/// selected file it is a hard link to).
fn item_into(
    digester: &mut Digester,
    below: &Path,
    item: &Item,
    hardlink_to: Option<&Path>,
) -> Result<(), ExecutorError> {
    let reading = || format!("reading {}", item.abs.display());
    let meta = &item.meta;
    // A socket has no layer entry (a copy of one fails; a mount shows it): its mode and
    // owner only.
    let header = if meta.is_socket() {
        format!(
            "{}\0socket\0{:o}\0{}:{}\0",
            below.display(),
            meta.mode,
            meta.uid,
            meta.gid
        )
    } else {
        let entry = layer::entry_from_stat(below, &item.abs, meta)?;
        let kind = match &entry.kind {
            EntryKind::File { size } => format!("file {size}"),
            EntryKind::Directory => "dir".to_owned(),
            EntryKind::Symlink { target } => format!("symlink {}", target.display()),
            EntryKind::Hardlink { target } => format!("hardlink {}", target.display()),
            EntryKind::CharDevice { major, minor } => format!("char {major}:{minor}"),
            EntryKind::BlockDevice { major, minor } => format!("block {major}:{minor}"),
            EntryKind::Fifo => "fifo".to_owned(),
        };
        let mut header = format!(
            "{}\0{kind}\0{:o}\0{}:{}\0",
            entry.path.display(),
            entry.mode,
            entry.uid,
            entry.gid
        );
        for (name, value) in &entry.xattrs {
            header.push_str(&format!("xattr {name}={}\0", hex(value)));
        }
        header
    };
    digester.update(header.as_bytes());
    match hardlink_to {
        Some(first) => digester.update(format!("link-to {}", first.display()).as_bytes()),
        None if meta.is_file() => {
            let mut file = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&item.abs)
                .within(reading)?;
            io::copy(&mut file, digester).within(reading)?;
        }
        None => {}
    }
    digester.update(b"\n");
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn checksum(dir: &Path) -> String {
        of_path(dir).unwrap()
    }

    #[test]
    fn mtimes_do_not_count_and_every_header_field_and_the_content_do() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("f"), b"one").unwrap();
        std::os::unix::fs::symlink("f", root.join("l")).unwrap();
        let first = checksum(&root);
        // A new mtime: the same checksum.
        let file = fs::File::options()
            .write(true)
            .open(root.join("f"))
            .unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        drop(file);
        assert_eq!(checksum(&root), first);
        // Content of the same size.
        fs::write(root.join("f"), b"two").unwrap();
        let content = checksum(&root);
        assert_ne!(content, first);
        // Mode.
        fs::set_permissions(root.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
        let mode = checksum(&root);
        assert_ne!(mode, content);
        // Owner.
        std::os::unix::fs::lchown(root.join("f"), Some(1234), Some(1234)).unwrap();
        let owner = checksum(&root);
        assert_ne!(owner, mode);
        // A link's target.
        fs::remove_file(root.join("l")).unwrap();
        std::os::unix::fs::symlink("g", root.join("l")).unwrap();
        let target = checksum(&root);
        assert_ne!(target, owner);
        // A file added.
        fs::write(root.join("new"), b"").unwrap();
        assert_ne!(checksum(&root), target);
    }

    #[test]
    fn hard_link_grouping_counts() {
        let dir = tempfile::tempdir().unwrap();
        let one = |linked: bool| {
            let root = dir.path().join(if linked { "linked" } else { "apart" });
            fs::create_dir(&root).unwrap();
            fs::write(root.join("a"), b"same").unwrap();
            if linked {
                fs::hard_link(root.join("a"), root.join("b")).unwrap();
            } else {
                fs::write(root.join("b"), b"same").unwrap();
            }
            let mut items = Vec::new();
            super::super::sources::walk_dir(&root, Path::new(""), &mut items).unwrap();
            let selected = Selected {
                items: items
                    .into_iter()
                    .map(|item| (item.rel.clone(), item))
                    .collect(),
                context_run: None,
                tops: 1,
                single_file_name: None,
                from_url: false,
                from_git: false,
                named_files: Vec::new(),
            };
            of_selections(&[selected]).unwrap()
        };
        assert_ne!(one(true), one(false));
    }
}
