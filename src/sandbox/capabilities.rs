//! Capabilities: a step keeps Docker's default set only, so it cannot mount, load kernel
//! modules, change the clock or reach the host's file system, even as root.
//! See capabilities(7) and moby's `oci/caps/defaults.go`.

/// Docker's default capabilities, by number (linux/capability.h).
pub const DOCKER_DEFAULT: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (13, "CAP_NET_RAW"),
    (18, "CAP_SYS_CHROOT"),
    (27, "CAP_MKNOD"),
    (29, "CAP_AUDIT_WRITE"),
    (31, "CAP_SETFCAP"),
];

/// The default set as a bit mask.
pub fn default_mask() -> u64 {
    DOCKER_DEFAULT
        .iter()
        .fold(0, |mask, (number, _)| mask | (1 << number))
}

/// Limits this process to `mask`: drops every other capability from the bounding set (so
/// no exec can regain it, not even of a setuid-root or file-capability binary), then sets
/// the effective and permitted sets to `mask` and the inheritable set to nothing (Docker
/// 20.10.14 and later, CVE-2022-24769: a program with file capabilities gains nothing from
/// an inheritable set it was not meant to have). Must run while we still hold
/// CAP_SETPCAP, before switching user.
///
/// # Errors
/// The failing `prctl`/`capset` errno.
pub fn limit_to(mask: u64) -> nix::Result<()> {
    for capability in 0..64u32 {
        if mask & (1 << capability) != 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointers.
        let result = unsafe {
            libc::prctl(
                libc::PR_CAPBSET_DROP,
                libc::c_ulong::from(capability),
                0,
                0,
                0,
            )
        };
        if result != 0 {
            let errno = nix::errno::Errno::last();
            // EINVAL: past the kernel's last capability; the rest do not exist either.
            if errno == nix::errno::Errno::EINVAL {
                break;
            }
            return Err(errno);
        }
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let low = (mask & 0xffff_ffff) as u32;
    let high = (mask >> 32) as u32;
    let data = [
        Data {
            effective: low,
            permitted: low,
            inheritable: 0,
        },
        Data {
            effective: high,
            permitted: high,
            inheritable: 0,
        },
    ];
    // SAFETY: capset(2) with a version-3 header reads exactly two `Data` structs, which
    // `data` provides; both live across the call.
    let result = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    nix::errno::Errno::result(result).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_mask_has_fourteen_capabilities_and_no_sys_admin() {
        assert_eq!(default_mask().count_ones(), 14);
        assert_eq!(default_mask() & (1 << 21), 0, "CAP_SYS_ADMIN");
        assert_eq!(default_mask() & (1 << 16), 0, "CAP_SYS_MODULE");
    }
}
