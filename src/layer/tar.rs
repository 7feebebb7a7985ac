//! A deterministic tar writer: the caller gives entries in order; each is written as a ustar
//! header with numeric uid/gid, no user or group names, no atime/ctime, and a PAX extended
//! header only when needed (a path or link target that does not fit ustar, a size, uid or
//! gid too big for its octal field, or xattrs such as `security.capability`). Mtimes are
//! clamped to `SOURCE_DATE_EPOCH` when given.
//!
//! The `tar` crate is used only to lay out the 512-byte header (field offsets, octal
//! encoding, checksum); which fields are set, and the PAX records, are decided here.
//!
//! Format: POSIX.1-2001 pax (<https://pubs.opengroup.org/onlinepubs/9699919799/utilities/pax.html>).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const BLOCK: usize = 512;
/// Largest value of an 8-byte octal field (uid, gid, device numbers): 7 digits.
const MAX_OCTAL_8: u64 = 0o7_777_777;
/// Largest value of a 12-byte octal field (size, mtime): 11 digits.
const MAX_OCTAL_12: u64 = 0o77_777_777_777;

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file of `size` bytes.
    File {
        /// Content length.
        size: u64,
    },
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink {
        /// Where it points (kept as is).
        target: PathBuf,
    },
    /// A hard link to an earlier entry of the same tar.
    Hardlink {
        /// The earlier entry's path (relative to the image root).
        target: PathBuf,
    },
    /// A character device.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// One tar entry's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// Path relative to the image root: no leading `/` or `./`, no `..`.
    pub path: PathBuf,
    /// Type and type-specific data.
    pub kind: EntryKind,
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Extended attributes to record (`security.capability`, `user.*`), sorted by name.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl TarEntry {
    /// An entry with owner root, mtime 0 and no xattrs.
    pub fn new(path: impl Into<PathBuf>, kind: EntryKind, mode: u32) -> Self {
        Self {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: BTreeMap::new(),
        }
    }
}

/// Writes entries as a deterministic tar stream.
pub struct TarWriter<W: Write> {
    out: W,
    clamp_mtime: Option<i64>,
}

impl<W: Write> TarWriter<W> {
    /// A writer; with `clamp_mtime`, later mtimes are written as that time.
    pub fn new(out: W, clamp_mtime: Option<i64>) -> Self {
        Self { out, clamp_mtime }
    }

    /// Appends one entry. For [`EntryKind::File`], `content` must yield exactly `size` bytes.
    ///
    /// # Errors
    /// Write failures, content shorter than announced, or a path with a NUL byte.
    pub fn append(&mut self, entry: &TarEntry, content: Option<&mut dyn Read>) -> io::Result<()> {
        let path = entry_name(&entry.path, matches!(entry.kind, EntryKind::Directory));
        if path.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: path contains a NUL byte", entry.path.display()),
            ));
        }
        let mut header = tar::Header::new_ustar();
        let mut pax: BTreeMap<String, Vec<u8>> = BTreeMap::new();

        match split_ustar_path(&path) {
            Some((prefix, name)) => {
                let ustar = header
                    .as_ustar_mut()
                    .expect("a new ustar header is a ustar header");
                ustar.name[..name.len()].copy_from_slice(name);
                ustar.prefix[..prefix.len()].copy_from_slice(prefix);
            }
            None => {
                pax.insert("path".to_owned(), path.clone());
                let short = truncate(&path, 100);
                header.as_old_mut().name[..short.len()].copy_from_slice(short);
            }
        }

        let (entry_type, size) = match &entry.kind {
            EntryKind::File { size } => (tar::EntryType::Regular, *size),
            EntryKind::Directory => (tar::EntryType::Directory, 0),
            EntryKind::Symlink { target } => {
                set_link(&mut header, &mut pax, target.as_os_str().as_bytes());
                (tar::EntryType::Symlink, 0)
            }
            EntryKind::Hardlink { target } => {
                set_link(&mut header, &mut pax, target.as_os_str().as_bytes());
                (tar::EntryType::Link, 0)
            }
            EntryKind::CharDevice { major, minor } => {
                set_device(&mut header, *major, *minor)?;
                (tar::EntryType::Char, 0)
            }
            EntryKind::BlockDevice { major, minor } => {
                set_device(&mut header, *major, *minor)?;
                (tar::EntryType::Block, 0)
            }
            EntryKind::Fifo => (tar::EntryType::Fifo, 0),
        };
        header.set_entry_type(entry_type);
        header.set_mode(entry.mode & 0o7777);
        set_number(
            &mut header,
            &mut pax,
            "uid",
            entry.uid,
            MAX_OCTAL_8,
            |h, v| {
                h.set_uid(v);
            },
        );
        set_number(
            &mut header,
            &mut pax,
            "gid",
            entry.gid,
            MAX_OCTAL_8,
            |h, v| {
                h.set_gid(v);
            },
        );
        set_number(&mut header, &mut pax, "size", size, MAX_OCTAL_12, |h, v| {
            h.set_size(v);
        });
        let mtime = match self.clamp_mtime {
            Some(clamp) => entry.mtime.min(clamp),
            None => entry.mtime,
        };
        header.set_mtime(u64::try_from(mtime).unwrap_or(0).min(MAX_OCTAL_12));
        for (name, value) in &entry.xattrs {
            pax.insert(format!("SCHILY.xattr.{name}"), value.clone());
        }

        if !pax.is_empty() {
            self.write_pax(&path, &pax)?;
        }
        header.set_cksum();
        self.out.write_all(header.as_bytes())?;

        if let EntryKind::File { size } = entry.kind {
            let content = content.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: file entry without content", entry.path.display()),
                )
            })?;
            let copied = io::copy(&mut content.take(size), &mut self.out)?;
            if copied != size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{}: file changed while being read ({copied} of {size} bytes)",
                        entry.path.display()
                    ),
                ));
            }
            self.pad(size)?;
        }
        Ok(())
    }

    fn write_pax(&mut self, path: &[u8], records: &BTreeMap<String, Vec<u8>>) -> io::Result<()> {
        let mut body = Vec::new();
        for (key, value) in records {
            body.extend_from_slice(&pax_record(key, value));
        }
        let mut header = tar::Header::new_ustar();
        let base = path.rsplit(|byte| *byte == b'/').next().unwrap_or(path);
        let mut name = b"PaxHeaders.0/".to_vec();
        name.extend_from_slice(truncate(base, 100 - name.len()));
        header.as_old_mut().name[..name.len()].copy_from_slice(&name);
        header.set_entry_type(tar::EntryType::XHeader);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(body.len() as u64);
        header.set_cksum();
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(&body)?;
        self.pad(body.len() as u64)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let remainder = (size % BLOCK as u64) as usize;
        if remainder != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - remainder])?;
        }
        Ok(())
    }

    /// Writes the end-of-archive marker (two zero blocks) and returns the output.
    ///
    /// # Errors
    /// Write failures.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The name as stored: relative, directories with a trailing `/` (as Docker and BuildKit
/// write them).
fn entry_name(path: &Path, is_directory: bool) -> Vec<u8> {
    let mut name = path.as_os_str().as_bytes().to_vec();
    while name.starts_with(b"./") {
        name.drain(..2);
    }
    while name.first() == Some(&b'/') {
        name.remove(0);
    }
    if is_directory && !name.ends_with(b"/") {
        name.push(b'/');
    }
    name
}

/// Splits a path into ustar `prefix` (≤155 bytes) and `name` (≤100 bytes) at a `/`, or
/// `None` when it cannot be.
fn split_ustar_path(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    // Try each `/` from the right such that name fits; the prefix then must fit.
    let trailing_slash = usize::from(path.ends_with(b"/"));
    for (index, byte) in path[..path.len() - trailing_slash].iter().enumerate().rev() {
        if *byte != b'/' {
            continue;
        }
        let (prefix, name) = (&path[..index], &path[index + 1..]);
        if name.len() > 100 {
            return None;
        }
        if prefix.len() <= 155 && !name.is_empty() {
            return Some((prefix, name));
        }
    }
    None
}

fn truncate(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

fn set_link(header: &mut tar::Header, pax: &mut BTreeMap<String, Vec<u8>>, target: &[u8]) {
    if target.len() <= 100 {
        header.as_old_mut().linkname[..target.len()].copy_from_slice(target);
    } else {
        pax.insert("linkpath".to_owned(), target.to_vec());
        let short = truncate(target, 100);
        header.as_old_mut().linkname[..short.len()].copy_from_slice(short);
    }
}

fn set_device(header: &mut tar::Header, major: u32, minor: u32) -> io::Result<()> {
    if u64::from(major) > MAX_OCTAL_8 || u64::from(minor) > MAX_OCTAL_8 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "device number too large for a tar header",
        ));
    }
    header.set_device_major(major)?;
    header.set_device_minor(minor)
}

fn set_number(
    header: &mut tar::Header,
    pax: &mut BTreeMap<String, Vec<u8>>,
    key: &str,
    value: u64,
    max: u64,
    set: impl Fn(&mut tar::Header, u64),
) {
    if value > max {
        pax.insert(key.to_owned(), value.to_string().into_bytes());
        set(header, 0);
    } else {
        set(header, value);
    }
}

/// One PAX record: `"<len> <key>=<value>\n"` where `<len>` counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut length = rest + 1;
    while length != rest + length.to_string().len() {
        length = rest + length.to_string().len();
    }
    let mut record = format!("{length} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(entries: &[(TarEntry, &[u8])]) -> Vec<u8> {
        let mut writer = TarWriter::new(Vec::new(), Some(1000));
        for (entry, content) in entries {
            let mut content = *content;
            writer.append(entry, Some(&mut content)).unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record("path", b"a"), b"9 path=a\n");
        let long = vec![b'x'; 95];
        let record = pax_record("path", &long);
        let (length, _) = std::str::from_utf8(&record[..4]).unwrap().split_at(3);
        assert_eq!(length.parse::<usize>().unwrap(), record.len());
    }

    #[test]
    fn headers_have_no_names_and_mtimes_are_clamped() {
        let mut entry = TarEntry::new("a/file", EntryKind::File { size: 3 }, 0o4755);
        entry.uid = 1000;
        entry.gid = 1000;
        entry.mtime = 5000;
        let bytes = write(&[(entry, b"abc")]);
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut entries = archive.entries().unwrap();
        let first = entries.next().unwrap().unwrap();
        let header = first.header();
        assert_eq!(header.path().unwrap().to_str(), Some("a/file"));
        assert_eq!(header.mode().unwrap(), 0o4755);
        assert_eq!(header.uid().unwrap(), 1000);
        assert_eq!(header.mtime().unwrap(), 1000);
        assert_eq!(header.username_bytes(), Some(&b""[..]));
        assert_eq!(bytes.len() % 512, 0);
    }

    #[test]
    fn long_names_and_xattrs_use_pax_and_read_back() {
        let long = format!("{}/{}", "d".repeat(200), "f".repeat(120));
        let mut entry = TarEntry::new(&long, EntryKind::File { size: 1 }, 0o644);
        entry
            .xattrs
            .insert("security.capability".to_owned(), vec![1, 0, 0, 2, 0xff]);
        let bytes = write(&[(entry, b"x")]);
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut first = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(first.path().unwrap().to_str(), Some(long.as_str()));
        let extensions: Vec<(String, Vec<u8>)> = first
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|ext| {
                let ext = ext.unwrap();
                (ext.key().unwrap().to_owned(), ext.value_bytes().to_vec())
            })
            .collect();
        assert!(extensions.contains(&(
            "SCHILY.xattr.security.capability".to_owned(),
            vec![1, 0, 0, 2, 0xff]
        )));
    }

    #[test]
    fn medium_paths_split_into_prefix_and_name_without_pax() {
        let path = format!("{}/{}", "p".repeat(120), "n".repeat(50));
        let bytes = write(&[(TarEntry::new(&path, EntryKind::Fifo, 0o600), b"")]);
        // No PAX header: the first header is the entry itself.
        assert_eq!(bytes[156], b'6');
    }
}
