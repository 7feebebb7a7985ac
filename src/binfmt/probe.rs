//! Probes: a minimal static ELF per architecture whose only code is `exit(0)`, built at run
//! time from the `probe` bytes of `binfmt/<cpu>.toml`. Running it answers "can this host
//! really run that platform?", natively or through binfmt_misc, with no image needed (the
//! idea of buildkit's `util/archutil`, without per-architecture source files).
//!
//! The ELF has one `PT_LOAD` segment covering the whole file, mapped read+execute at
//! [`LOAD_ADDRESS`]; the entry point is the first byte after the program header. Class, byte
//! order and `e_machine` come from the handler's magic, so the probe is matched by exactly
//! the binfmt entry it checks.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::catalog::Handler;

/// Where the probe is loaded: page aligned, above `vm.mmap_min_addr`, below anything QEMU
/// reserves for itself.
pub const LOAD_ADDRESS: u64 = 0x40_0000;

/// How long a probe may take before it counts as hung (QEMU starts in milliseconds).
const TIMEOUT: Duration = Duration::from_secs(20);

/// Why a probe did not exit with 0.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The probe file could not be written.
    #[error("cannot write the probe to {path}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused to execute it (no handler: `ENOEXEC`, "Exec format error").
    #[error("the kernel cannot execute it ({source})")]
    Exec {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The directory does not allow executing files (mounted `noexec`).
    #[error("cannot execute files in {dir} (mounted noexec? set TMPDIR to another directory)")]
    NoExec {
        /// The directory.
        dir: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It ran but did not exit with 0 (a crash: the CPU or emulator lacks the instructions).
    #[error("it ran but ended with {status}")]
    Status {
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// It did not finish in time.
    #[error("it did not finish within {seconds} s")]
    Hung {
        /// The limit.
        seconds: u64,
    },
}

struct Writer {
    bytes: Vec<u8>,
    is_big_endian: bool,
    is_64: bool,
}

impl Writer {
    fn u16(&mut self, value: u16) {
        let bytes = if self.is_big_endian {
            value.to_be_bytes()
        } else {
            value.to_le_bytes()
        };
        self.bytes.extend_from_slice(&bytes);
    }

    fn u32(&mut self, value: u32) {
        let bytes = if self.is_big_endian {
            value.to_be_bytes()
        } else {
            value.to_le_bytes()
        };
        self.bytes.extend_from_slice(&bytes);
    }

    fn u64(&mut self, value: u64) {
        let bytes = if self.is_big_endian {
            value.to_be_bytes()
        } else {
            value.to_le_bytes()
        };
        self.bytes.extend_from_slice(&bytes);
    }

    /// An address-sized field (`Elf32_Addr`/`Elf64_Addr`, `_Off`).
    fn word(&mut self, value: u64) {
        if self.is_64 {
            self.u64(value);
        } else {
            // 32-bit probes only hold small addresses (LOAD_ADDRESS + a few bytes).
            self.u32(u32::try_from(value).expect("32-bit probe addresses fit in 32 bits"));
        }
    }
}

/// The probe ELF for `handler`: header, one program header, the machine code.
pub fn probe_elf(handler: &Handler) -> Vec<u8> {
    let is_64 = handler.magic.get(4) == Some(&2);
    let is_big_endian = handler.magic.get(5) == Some(&2);
    let machine = match (handler.magic.get(18), handler.magic.get(19)) {
        (Some(&a), Some(&b)) if is_big_endian => u16::from_be_bytes([a, b]),
        (Some(&a), Some(&b)) => u16::from_le_bytes([a, b]),
        _ => 0,
    };
    let (header_size, program_header_size) = if is_64 { (64u16, 56u16) } else { (52, 32) };
    let code_offset = u64::from(header_size) + u64::from(program_header_size);
    let file_size = code_offset + handler.probe.len() as u64;
    let mut out = Writer {
        bytes: Vec::with_capacity(usize::try_from(file_size).unwrap_or(256)),
        is_big_endian,
        is_64,
    };
    // e_ident: magic, class, data, version, OS ABI (System V), padding.
    out.bytes.extend_from_slice(&[0x7f, b'E', b'L', b'F']);
    out.bytes.push(if is_64 { 2 } else { 1 });
    out.bytes.push(if is_big_endian { 2 } else { 1 });
    out.bytes.push(1);
    out.bytes.extend_from_slice(&[0; 9]);
    out.u16(2); // e_type: ET_EXEC
    out.u16(machine);
    out.u32(1); // e_version
    out.word(LOAD_ADDRESS + code_offset); // e_entry
    out.word(u64::from(header_size)); // e_phoff
    out.word(0); // e_shoff: no sections
    out.u32(handler.probe_elf_flags);
    out.u16(header_size);
    out.u16(program_header_size);
    out.u16(1); // e_phnum
    out.u16(0); // e_shentsize
    out.u16(0); // e_shnum
    out.u16(0); // e_shstrndx
    const PT_LOAD: u32 = 1;
    const PF_R_X: u32 = 0b101;
    if is_64 {
        out.u32(PT_LOAD);
        out.u32(PF_R_X);
        out.u64(0); // p_offset
        out.u64(LOAD_ADDRESS); // p_vaddr
        out.u64(LOAD_ADDRESS); // p_paddr
        out.u64(file_size); // p_filesz
        out.u64(file_size); // p_memsz
        out.u64(0x1000); // p_align
    } else {
        out.u32(PT_LOAD);
        out.word(0);
        out.word(LOAD_ADDRESS);
        out.word(LOAD_ADDRESS);
        out.word(file_size);
        out.word(file_size);
        out.u32(PF_R_X);
        out.u32(0x1000);
    }
    out.bytes.extend_from_slice(&handler.probe);
    out.bytes
}

/// Writes the probe for `handler` into `dir` and runs it.
///
/// # Errors
/// [`ProbeError`] saying how it failed.
pub fn run_probe(handler: &Handler, dir: &Path) -> Result<(), ProbeError> {
    let path = dir.join(format!("xbuild-probe-{}", handler.cpu));
    let write_error = |source| ProbeError::Write {
        path: path.clone(),
        source,
    };
    {
        let mut file = std::fs::File::create(&path).map_err(write_error)?;
        file.write_all(&probe_elf(handler)).map_err(write_error)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o755))
            .map_err(write_error)?;
    }
    let mut attempts = 0;
    let mut child = loop {
        match Command::new(&path)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => break child,
            // Another thread may be forking while our write descriptor was open: the
            // inherited copy makes exec fail with ETXTBSY until that child execs. Retry.
            Err(error) if error.raw_os_error() == Some(libc::ETXTBSY) && attempts < 20 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            // A temporary directory on a noexec mount: say so rather than blame the CPU.
            Err(source) if source.raw_os_error() == Some(libc::EACCES) => {
                return Err(ProbeError::NoExec {
                    dir: dir.to_path_buf(),
                    source,
                });
            }
            Err(source) => return Err(ProbeError::Exec { source }),
        }
    };
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return if status.success() {
                Ok(())
            } else {
                Err(ProbeError::Status { status })
            };
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ProbeError::Hung {
                seconds: TIMEOUT.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binfmt::catalog;
    use crate::platform::{self, catalog as platforms};

    #[test]
    fn every_probe_is_a_well_formed_elf_of_its_platform() {
        for info in platforms::all() {
            let handler = catalog::by_cpu(&info.binfmt).unwrap();
            let elf = probe_elf(handler);
            assert!(
                handler.matches(&elf),
                "{}: its own entry must match it",
                handler.cpu
            );
            let parsed = goblin::elf::Elf::parse(&elf)
                .unwrap_or_else(|error| panic!("{}: {error}", handler.cpu));
            assert_eq!(parsed.program_headers.len(), 1);
            assert_eq!(
                parsed.entry,
                LOAD_ADDRESS + elf.len() as u64 - handler.probe.len() as u64
            );
            // Same ELF machine as the platform table: arm/v6 and arm/v7 share one.
            let detected = platform::elf_platform(&elf).unwrap();
            assert_eq!(
                detected.run_info().unwrap().elf,
                info.elf,
                "{}",
                handler.cpu
            );
        }
    }

    #[test]
    fn host_probe_runs_natively() {
        let host = platform::host();
        let handler = catalog::by_cpu(&host.run_info().unwrap().binfmt).unwrap();
        let dir = tempfile::tempdir().unwrap();
        run_probe(handler, dir.path()).unwrap();
    }

    #[test]
    fn a_crashing_probe_is_reported() {
        let host = platform::host();
        let mut handler = catalog::by_cpu(&host.run_info().unwrap().binfmt)
            .unwrap()
            .clone();
        // Zero bytes are not an exit sequence on any of our architectures: the process dies
        // (SIGSEGV or SIGILL) or runs off the end of the segment.
        handler.probe = vec![0; 8];
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            run_probe(&handler, dir.path()),
            Err(ProbeError::Status { .. })
        ));
    }
}
