//! Makes the step's `fsync` family of system calls succeed without waiting for the disk.
//!
//! dpkg syncs every file it unpacks and apt every list it writes: an `apt-get install` of a
//! compiler makes thousands of `fsync` calls, each a journal commit (about 0.6 ms on this
//! project's machines: seconds per step). Inside a step they buy nothing: the step's files
//! live in an overlay upper directory that is thrown away if the build dies, and that the
//! store syncs once (its files and directories) when it keeps it as a snapshot. So a seccomp
//! filter answers `fsync`, `fdatasync`, `sync_file_range`, `syncfs` and `sync` with success,
//! like `eatmydata` or `dpkg --force-unsafe-io` would. `XBUILD_STEP_FSYNC=1` keeps the real
//! calls.
//!
//! The filter only matches the host's native system call ABI, which is also what QEMU
//! user-mode emulation uses for a foreign step; other ABIs (32-bit compat) pass unchanged.

/// The native system call numbers of the calls answered with success.
#[cfg(target_arch = "x86_64")]
pub(crate) const CALLS: [libc::c_long; 5] = [
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_sync_file_range,
    libc::SYS_syncfs,
    libc::SYS_sync,
];
#[cfg(target_arch = "aarch64")]
pub(crate) const CALLS: [libc::c_long; 5] = [
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_sync_file_range,
    libc::SYS_syncfs,
    libc::SYS_sync,
];

/// `AUDIT_ARCH_*` of the native ABI (<linux/audit.h>).
#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

/// Offsets in `struct seccomp_data` (<linux/seccomp.h>): `int nr; __u32 arch; ...`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;

/// The BPF program: for the native ABI, the listed calls return 0; everything else runs.
/// Installed (needs CAP_SYS_ADMIN: `no_new_privs` is not set, so setuid programs keep
/// working in the step) through [`super::sys::Sys::install_seccomp`].
pub(crate) fn program() -> Vec<libc::sock_filter> {
    let statement = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let calls = CALLS.len() as u8;
    let mut program = vec![
        statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, OFFSET_ARCH),
        // Not the native ABI: skip to "allow" (past the load and the comparisons).
        jump(NATIVE_ARCH, 0, calls + 1),
        statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, OFFSET_NR),
    ];
    for (index, call) in CALLS.iter().enumerate() {
        // A match jumps over the remaining comparisons and the "allow" to "succeed".
        let remaining = calls - 1 - index as u8;
        program.push(jump(*call as u32, remaining + 1, 0));
    }
    program.push(statement(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_ALLOW,
    ));
    // SECCOMP_RET_ERRNO with errno 0: the call returns 0 without running.
    program.push(statement(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_ERRNO,
    ));
    program
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_comparison_lands_on_succeed_and_a_miss_on_allow() {
        let program = program();
        let allow = program.len() - 2;
        let succeed = program.len() - 1;
        // The arch check's miss skips exactly to "allow".
        assert_eq!(1 + 1 + program[1].jf as usize, allow);
        for (index, comparison) in program.iter().enumerate().take(allow).skip(3) {
            assert_eq!(index + 1 + comparison.jt as usize, succeed, "at {index}");
            assert_eq!(comparison.jf, 0);
        }
        assert_eq!(program[allow].k, libc::SECCOMP_RET_ALLOW);
        assert_eq!(program[succeed].k, libc::SECCOMP_RET_ERRNO);
    }

    /// In a child process (the filter cannot be removed): fsync of a file succeeds and
    /// takes no time; needs root (CAP_SYS_ADMIN) like the sandbox.
    #[test]
    fn fsync_returns_success_under_the_filter() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let mut filters = program();
        // SAFETY: the child only makes system calls (no allocation) and exits.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                use crate::sandbox::sys::Sys;
                let ok = crate::sandbox::sys::LinuxSys
                    .install_seccomp(&mut filters)
                    .is_ok()
                    && {
                        // An invalid descriptor: a real fsync fails with EBADF; under the
                        // filter it "succeeds", which shows the call never ran.
                        // SAFETY: fsync takes a descriptor and no pointers.
                        unsafe { libc::fsync(-1) == 0 }
                    };
                // SAFETY: _exit is always safe to call.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
        // Without the filter, the same call fails.
        // SAFETY: as above.
        assert_eq!(unsafe { libc::fsync(-1) }, -1);
    }
}
