//! The kernel interface: `/proc/sys/fs/binfmt_misc` (see
//! <https://docs.kernel.org/admin-guide/binfmt-misc.html>).
//!
//! Every entry is a file of the same name; `register` takes new lines; writing `-1` to an
//! entry removes it, `0`/`1` disables/enables it.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::BinfmtError;

/// Where binfmt_misc is normally mounted.
pub const DEFAULT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// One registered entry, as its file under binfmt_misc reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Entry name (the file name).
    pub name: String,
    /// `enabled` / `disabled`.
    pub is_enabled: bool,
    /// The interpreter path given at registration.
    pub interpreter: String,
    /// Flag letters (`F`, `P`, `C`, `O`), as the kernel prints them.
    pub flags: String,
    /// Offset of the magic (magic entries only).
    pub offset: u32,
    /// Magic bytes; empty for an extension entry.
    pub magic: Vec<u8>,
    /// Mask bytes; empty when the entry has none (all bits compared).
    pub mask: Vec<u8>,
    /// File name extension, for an `E` entry.
    pub extension: Option<String>,
}

impl Entry {
    /// Parses the text of an entry file:
    ///
    /// ```text
    /// enabled
    /// interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
    /// flags: PF
    /// offset 0
    /// magic 7f454c46...
    /// mask ffffffff...
    /// ```
    pub fn parse(name: &str, text: &str) -> Self {
        let mut entry = Self {
            name: name.to_owned(),
            is_enabled: false,
            interpreter: String::new(),
            flags: String::new(),
            offset: 0,
            magic: Vec::new(),
            mask: Vec::new(),
            extension: None,
        };
        for line in text.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "enabled" => entry.is_enabled = true,
                "disabled" => entry.is_enabled = false,
                "interpreter" => value.clone_into(&mut entry.interpreter),
                "flags:" => value.trim().clone_into(&mut entry.flags),
                "offset" => entry.offset = value.trim().parse().unwrap_or(0),
                "magic" => entry.magic = hex::decode(value.trim()).unwrap_or_default(),
                "mask" => entry.mask = hex::decode(value.trim()).unwrap_or_default(),
                "extension" => entry.extension = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        entry
    }

    /// `F`: the kernel opened the interpreter at registration, so it works inside another
    /// root filesystem (a build's) where the interpreter's path does not exist.
    pub fn has_fix_binary(&self) -> bool {
        self.flags.contains('F')
    }

    /// Whether a file starting with `header` goes to this entry.
    pub fn matches(&self, header: &[u8]) -> bool {
        !self.magic.is_empty()
            && super::catalog::matches_magic(self.offset, &self.magic, &self.mask, header)
    }
}

/// A mounted binfmt_misc file system.
#[derive(Debug, Clone)]
pub struct BinfmtMisc {
    dir: PathBuf,
}

impl BinfmtMisc {
    /// Opens binfmt_misc at [`DEFAULT_DIR`], mounting it first when it is absent and we are
    /// root (as systemd's `proc-sys-fs-binfmt_misc.mount` would).
    ///
    /// # Errors
    /// [`BinfmtError::NotMounted`] when it is absent and we may not mount it,
    /// [`BinfmtError::Mount`] when mounting fails.
    pub fn open() -> Result<Self, BinfmtError> {
        let dir = PathBuf::from(DEFAULT_DIR);
        if !dir.join("register").exists() {
            if !nix::unistd::geteuid().is_root() {
                return Err(BinfmtError::NotMounted { dir });
            }
            nix::mount::mount(
                Some("binfmt_misc"),
                &dir,
                Some("binfmt_misc"),
                nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NODEV
                    | nix::mount::MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(|source| BinfmtError::Mount {
                dir: dir.clone(),
                source,
            })?;
        }
        Ok(Self { dir })
    }

    /// Opens binfmt_misc at another directory (tests).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every entry, sorted by name.
    ///
    /// # Errors
    /// [`BinfmtError::Read`] when the directory cannot be listed.
    pub fn entries(&self) -> Result<Vec<Entry>, BinfmtError> {
        let read_error = |source| BinfmtError::Read {
            path: self.dir.clone(),
            source,
        };
        let mut entries = Vec::new();
        for item in std::fs::read_dir(&self.dir).map_err(read_error)? {
            let item = item.map_err(read_error)?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name == "register" || name == "status" {
                continue;
            }
            // An entry removed between listing and reading is simply gone.
            if let Some(entry) = self.entry(&name)? {
                entries.push(entry);
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// The entry `name`, if registered.
    ///
    /// # Errors
    /// [`BinfmtError::Read`] on a read error other than "not found".
    pub fn entry(&self, name: &str) -> Result<Option<Entry>, BinfmtError> {
        let path = self.dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(Entry::parse(name, &text))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(BinfmtError::Read { path, source }),
        }
    }

    /// Whether binfmt_misc as a whole is enabled (`status`).
    pub fn is_enabled(&self) -> bool {
        std::fs::read_to_string(self.dir.join("status")).is_ok_and(|text| text.trim() == "enabled")
    }

    /// Writes a registration line to `register`.
    ///
    /// # Errors
    /// [`BinfmtError::Register`], whose message turns the errno into advice.
    pub fn register(&self, name: &str, line: &str) -> Result<(), BinfmtError> {
        // One write(2) of the whole line: the kernel parses each write as one entry.
        let result = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("register"))
            .and_then(|mut file| file.write_all(line.as_bytes()));
        result.map_err(|source| BinfmtError::Register {
            name: name.to_owned(),
            source,
        })
    }

    /// Removes the entry `name` (`echo -1 > entry`).
    ///
    /// # Errors
    /// [`BinfmtError::Unregister`].
    pub fn unregister(&self, name: &str) -> Result<(), BinfmtError> {
        let result = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join(name))
            .and_then(|mut file| file.write_all(b"-1"));
        result.map_err(|source| BinfmtError::Unregister {
            name: name.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
        flags: PF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn parses_a_debian_entry() {
        let entry = Entry::parse("qemu-aarch64", DEBIAN_AARCH64);
        assert!(entry.is_enabled);
        assert_eq!(
            entry.interpreter,
            "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
        );
        assert_eq!(entry.flags, "PF");
        assert!(entry.has_fix_binary());
        let handler = super::super::catalog::by_cpu("aarch64").unwrap();
        assert_eq!(entry.magic, handler.magic);
        assert_eq!(entry.mask, handler.mask);
        assert!(entry.matches(&handler.magic));
    }

    #[test]
    fn parses_disabled_extension_entries() {
        let entry = Entry::parse(
            "jar",
            "disabled\ninterpreter /usr/bin/jexec\nflags: \nextension .jar\n",
        );
        assert!(!entry.is_enabled);
        assert!(!entry.has_fix_binary());
        assert_eq!(entry.extension.as_deref(), Some(".jar"));
        assert!(!entry.matches(b"\x7fELF"));
    }
}
