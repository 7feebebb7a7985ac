//! A streaming tar reader for untrusted layers: ustar, GNU and PAX headers, with limits on
//! extended headers (a hostile tar cannot make us allocate gigabytes for a "path"), checksum
//! checks, and entry types outside what a layer may hold refused by name.
//!
//! It only parses; deciding whether an entry is safe to write is [`super::apply`]'s job.

use std::collections::BTreeMap;
use std::io::{self, Read};

use super::tar::EntryKind;

const BLOCK: usize = 512;
/// Largest PAX or GNU long-name extension accepted (paths are at most 4 KiB on Linux; xattrs
/// at most 64 KiB each).
pub const MAX_EXTENSION_SIZE: u64 = 1024 * 1024;
/// Most extension headers in front of one entry.
const MAX_EXTENSIONS: usize = 16;

/// Errors parsing a tar stream.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading the stream failed.
    #[error("reading the layer")]
    Read(#[source] io::Error),
    /// A header is malformed.
    #[error("entry {entry:?}: {reason}")]
    Malformed {
        /// The entry's path as far as known.
        entry: String,
        /// What is wrong.
        reason: String,
    },
}

/// One entry as read: raw path bytes and metadata.
#[derive(Debug, Clone)]
pub struct ReadEntry {
    /// The raw path, as stored (may be absolute or contain `..`: not checked here).
    pub path: Vec<u8>,
    /// The type; link targets are raw bytes turned into paths.
    pub kind: EntryKind,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Extended attributes from `SCHILY.xattr.*` records.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl ReadEntry {
    /// The path for messages.
    pub fn display_path(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// Reads entries one by one; the content of the current file entry is read with
/// [`Self::content`] (what is not read is skipped by the next [`Self::next_entry`]).
pub struct TarReader<R: Read> {
    inner: R,
    /// Content bytes of the current entry not read yet.
    remaining: u64,
    /// Padding after the current entry's content.
    padding: u64,
    finished: bool,
}

impl<R: Read> TarReader<R> {
    /// A reader over a (decompressed) tar stream.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            remaining: 0,
            padding: 0,
            finished: false,
        }
    }

    /// The next entry, or `None` at the end of the archive.
    ///
    /// # Errors
    /// Read errors, bad checksums, oversized or malformed extension headers, and entry
    /// types a layer must not hold.
    pub fn next_entry(&mut self) -> Result<Option<ReadEntry>, ReadError> {
        if self.finished {
            return Ok(None);
        }
        self.skip_rest()?;
        let mut pax: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut gnu_path: Option<Vec<u8>> = None;
        let mut gnu_link: Option<Vec<u8>> = None;
        for _ in 0..=MAX_EXTENSIONS {
            let mut block = [0u8; BLOCK];
            if !self.read_block(&mut block)? {
                // EOF without the end marker: accept, as GNU tar does (with a warning).
                self.finished = true;
                return Ok(None);
            }
            if block.iter().all(|byte| *byte == 0) {
                self.finished = true;
                return Ok(None);
            }
            let header = tar::Header::from_byte_slice(&block);
            let name_for_errors = String::from_utf8_lossy(&header.path_bytes()).into_owned();
            let malformed = |reason: String| ReadError::Malformed {
                entry: name_for_errors.clone(),
                reason,
            };
            verify_checksum(&block).map_err(&malformed)?;
            let size = header
                .entry_size()
                .map_err(|error| malformed(format!("bad size field: {error}")))?;
            let entry_type = header.entry_type();
            match entry_type.as_byte() {
                b'x' | b'g' | b'L' | b'K' => {
                    if size > MAX_EXTENSION_SIZE {
                        return Err(malformed(format!(
                            "extension header of {size} bytes (limit {MAX_EXTENSION_SIZE})"
                        )));
                    }
                    let data = self.read_data(size)?;
                    match entry_type.as_byte() {
                        b'x' => parse_pax(&data, &mut pax).map_err(&malformed)?,
                        // Global headers apply to every later entry in theory; layers do not
                        // use them and what they may set (comments, charsets) is ignored.
                        b'g' => {
                            let mut global = BTreeMap::new();
                            parse_pax(&data, &mut global).map_err(&malformed)?;
                        }
                        b'L' => gnu_path = Some(trim_nul(data)),
                        _ => gnu_link = Some(trim_nul(data)),
                    }
                    continue;
                }
                _ => {}
            }
            let path = pax
                .remove("path")
                .or(gnu_path)
                .unwrap_or_else(|| header.path_bytes().into_owned());
            let link = pax
                .remove("linkpath")
                .or(gnu_link)
                .or_else(|| header.link_name_bytes().map(std::borrow::Cow::into_owned));
            let entry_name = String::from_utf8_lossy(&path).into_owned();
            let malformed = |reason: String| ReadError::Malformed {
                entry: entry_name.clone(),
                reason,
            };
            let number = |key: &str, field: io::Result<u64>| -> Result<u64, ReadError> {
                match pax.get(key) {
                    Some(value) => std::str::from_utf8(value)
                        .ok()
                        .and_then(|text| text.split('.').next())
                        .and_then(|text| text.parse::<u64>().ok())
                        .ok_or_else(|| malformed(format!("bad PAX {key}"))),
                    None if blank_field(&block, key) => Ok(0),
                    None => field.map_err(|error| malformed(format!("bad {key} field: {error}"))),
                }
            };
            let size = number("size", Ok(size))?;
            let uid = number("uid", header.uid())?;
            let gid = number("gid", header.gid())?;
            let mtime = number("mtime", header.mtime())?;
            let mode = if blank_field(&block, "mode") {
                Ok(0o644)
            } else {
                header.mode()
            };
            let mode =
                mode.map_err(|error| malformed(format!("bad mode field: {error}")))? & 0o7777;
            let link_target = || -> Result<std::path::PathBuf, ReadError> {
                use std::os::unix::ffi::OsStringExt;
                let link = link.clone().unwrap_or_default();
                if link.is_empty() {
                    return Err(malformed("link without a target".to_owned()));
                }
                Ok(std::ffi::OsString::from_vec(link).into())
            };
            let device = || -> Result<(u32, u32), ReadError> {
                if block[329..345]
                    .iter()
                    .all(|byte| *byte == 0 || *byte == b' ')
                {
                    return Ok((0, 0));
                }
                let major = header
                    .device_major()
                    .map_err(|error| malformed(format!("bad device major: {error}")))?
                    .unwrap_or(0);
                let minor = header
                    .device_minor()
                    .map_err(|error| malformed(format!("bad device minor: {error}")))?
                    .unwrap_or(0);
                Ok((major, minor))
            };
            let kind = match entry_type.as_byte() {
                b'0' | 0 | b'7' => {
                    if path.ends_with(b"/") && size == 0 {
                        // Old tars mark directories with a trailing slash only.
                        EntryKind::Directory
                    } else {
                        EntryKind::File { size }
                    }
                }
                b'1' => EntryKind::Hardlink {
                    target: link_target()?,
                },
                b'2' => EntryKind::Symlink {
                    target: link_target()?,
                },
                b'3' => {
                    let (major, minor) = device()?;
                    EntryKind::CharDevice { major, minor }
                }
                b'4' => {
                    let (major, minor) = device()?;
                    EntryKind::BlockDevice { major, minor }
                }
                b'5' => EntryKind::Directory,
                b'6' => EntryKind::Fifo,
                other => {
                    return Err(malformed(format!(
                        "unsupported entry type {:?}",
                        char::from(other)
                    )));
                }
            };
            // Only regular files carry content; anything announced for other types is skipped.
            self.remaining = size;
            self.padding = padding(size);
            if !matches!(kind, EntryKind::File { .. }) {
                self.skip_rest()?;
            }
            let xattrs = pax
                .iter()
                .filter_map(|(key, value)| {
                    key.strip_prefix("SCHILY.xattr.")
                        .map(|name| (name.to_owned(), value.clone()))
                })
                .collect();
            return Ok(Some(ReadEntry {
                path,
                kind,
                mode,
                uid,
                gid,
                mtime: i64::try_from(mtime).unwrap_or(i64::MAX),
                xattrs,
            }));
        }
        Err(ReadError::Malformed {
            entry: String::new(),
            reason: format!("more than {MAX_EXTENSIONS} extension headers in a row"),
        })
    }

    /// The content of the current file entry (exactly its size, then EOF).
    pub fn content(&mut self) -> ContentReader<'_, R> {
        ContentReader { reader: self }
    }

    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> Result<bool, ReadError> {
        let mut filled = 0;
        while filled < BLOCK {
            match self.inner.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => {
                    return Err(ReadError::Read(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "truncated tar header",
                    )));
                }
                Ok(read) => filled += read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(ReadError::Read(error)),
            }
        }
        Ok(true)
    }

    fn read_data(&mut self, size: u64) -> Result<Vec<u8>, ReadError> {
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        (&mut self.inner)
            .take(size)
            .read_to_end(&mut data)
            .map_err(ReadError::Read)?;
        if data.len() as u64 != size {
            return Err(ReadError::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated tar extension header",
            )));
        }
        self.remaining = 0;
        self.padding = padding(size);
        self.skip_rest()?;
        Ok(data)
    }

    fn skip_rest(&mut self) -> Result<(), ReadError> {
        let total = self.remaining + self.padding;
        if total > 0 {
            let skipped = io::copy(&mut (&mut self.inner).take(total), &mut io::sink())
                .map_err(ReadError::Read)?;
            if skipped != total {
                return Err(ReadError::Read(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "truncated tar entry",
                )));
            }
        }
        self.remaining = 0;
        self.padding = 0;
        Ok(())
    }
}

/// Reads the current entry's content.
pub struct ContentReader<'a, R: Read> {
    reader: &'a mut TarReader<R>,
}

impl<R: Read> Read for ContentReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.reader.remaining == 0 {
            return Ok(0);
        }
        let max = usize::try_from(self.reader.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let read = self.reader.inner.read(&mut buf[..max])?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated tar entry content",
            ));
        }
        self.reader.remaining -= read as u64;
        Ok(read)
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Whether a numeric header field holds only NULs and spaces (some writers leave fields
/// they do not use empty); such a field reads as 0.
fn blank_field(block: &[u8; BLOCK], key: &str) -> bool {
    let range = match key {
        "mode" => 100..108,
        "uid" => 108..116,
        "gid" => 116..124,
        "size" => 124..136,
        "mtime" => 136..148,
        _ => return false,
    };
    block[range].iter().all(|byte| *byte == 0 || *byte == b' ')
}

fn trim_nul(mut data: Vec<u8>) -> Vec<u8> {
    while data.last() == Some(&0) {
        data.pop();
    }
    data
}

/// Whether `head` starts with a tar header block whose checksum matches (what Go's
/// `tar.Reader.Next` checks, and BuildKit's archive detection with it).
pub(crate) fn is_tar_header(head: &[u8]) -> bool {
    head.get(..BLOCK)
        .and_then(|block| <&[u8; BLOCK]>::try_from(block).ok())
        .is_some_and(|block| verify_checksum(block).is_ok())
}

fn verify_checksum(block: &[u8; BLOCK]) -> Result<(), String> {
    let header = tar::Header::from_byte_slice(block);
    let stored = header
        .cksum()
        .map_err(|error| format!("bad checksum field: {error}"))?;
    let computed: u32 = block
        .iter()
        .enumerate()
        .map(|(index, byte)| {
            if (148..156).contains(&index) {
                u32::from(b' ')
            } else {
                u32::from(*byte)
            }
        })
        .sum();
    if stored == computed {
        Ok(())
    } else {
        Err(format!(
            "header checksum {stored} does not match {computed}"
        ))
    }
}

fn parse_pax(data: &[u8], into: &mut BTreeMap<String, Vec<u8>>) -> Result<(), String> {
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest
            .iter()
            .position(|byte| *byte == b' ')
            .ok_or("PAX record without a length")?;
        let length: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or("PAX record with a bad length")?;
        if length <= space + 1 || length > rest.len() || rest[length - 1] != b'\n' {
            return Err("PAX record with a bad length".to_owned());
        }
        let record = &rest[space + 1..length - 1];
        let equals = record
            .iter()
            .position(|byte| *byte == b'=')
            .ok_or("PAX record without '='")?;
        let key = String::from_utf8(record[..equals].to_vec())
            .map_err(|_| "PAX key is not UTF-8".to_owned())?;
        into.insert(key, record[equals + 1..].to_vec());
        rest = &rest[length..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tar::{TarEntry, TarWriter};
    use super::*;

    #[test]
    fn reads_back_what_the_writer_wrote() {
        let mut writer = TarWriter::new(Vec::new(), None);
        let long = format!("{}/file", "x".repeat(300));
        let mut entry = TarEntry::new(&long, EntryKind::File { size: 5 }, 0o755);
        entry.uid = 3_000_000;
        entry.xattrs.insert("user.a".to_owned(), b"b".to_vec());
        writer.append(&entry, Some(&mut &b"hello"[..])).unwrap();
        let link = TarEntry::new("l", EntryKind::Symlink { target: "t".into() }, 0o777);
        writer.append(&link, None).unwrap();
        let bytes = writer.finish().unwrap();

        let mut reader = TarReader::new(&bytes[..]);
        let first = reader.next_entry().unwrap().unwrap();
        assert_eq!(first.path, long.as_bytes());
        assert_eq!(first.uid, 3_000_000);
        assert_eq!(first.xattrs.get("user.a").unwrap(), b"b");
        let mut content = String::new();
        reader.content().read_to_string(&mut content).unwrap();
        assert_eq!(content, "hello");
        let second = reader.next_entry().unwrap().unwrap();
        assert_eq!(second.kind, EntryKind::Symlink { target: "t".into() });
        assert!(reader.next_entry().unwrap().is_none());
    }

    #[test]
    fn huge_extension_headers_are_refused() {
        let mut header = tar::Header::new_ustar();
        header.set_path("big").unwrap();
        header.set_entry_type(tar::EntryType::XHeader);
        header.set_size(MAX_EXTENSION_SIZE + 1);
        header.set_cksum();
        let bytes = header.as_bytes().to_vec();
        let error = TarReader::new(&bytes[..]).next_entry().unwrap_err();
        assert!(error.to_string().contains("extension header"), "{error}");
    }
}
