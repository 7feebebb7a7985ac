//! The namespaces a step gets, and why.
//!
//! - mount: the overlay and every other mount exist only for the step; the namespace, and
//!   with it every mount, goes away when its last process exits, whatever happened.
//! - PID: the step's processes cannot see or signal the host's; when the step's first
//!   process (PID 1 of the namespace) exits, the kernel kills whatever it left running.
//! - IPC: System V and POSIX message queues and semaphores are private.
//! - UTS: the step's host name is its own.
//! - network, unless `--network=host`: with `none`, a namespace with nothing but `lo`; by
//!   default, one whose `eth0` reaches the outside through `slirp4netns` (see
//!   `super::network`), never the host's loopback.
//!
//! No user namespace: the sandbox runs as real root (rootless is not supported yet). They
//! are entered with one `unshare(2)` by the re-executed child, before it forks the step's
//! PID 1 (`unshare(CLONE_NEWPID)` only applies to children), except the default network's:
//! PID 1 enters that one itself, so that the child stays in the host's network namespace,
//! where `slirp4netns` must run.

use nix::sched::CloneFlags;

use super::spec::Network;

/// The `unshare(2)` flags of the re-executed child, before it forks PID 1.
pub fn unshare_flags(network: Network) -> CloneFlags {
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    flags
}

/// Whether PID 1 enters a network namespace of its own (the default network's).
pub fn pid1_unshares_network(network: Network) -> bool {
    network == Network::Default
}

/// Brings `lo` up in a fresh network namespace (it starts down; Docker's `none` network
/// has it up, and programs expect 127.0.0.1 to answer).
///
/// # Errors
/// The socket or ioctl errno.
pub fn bring_loopback_up() -> nix::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket(2) takes plain integers.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    nix::errno::Errno::result(raw)?;
    // SAFETY: `raw` is a descriptor socket(2) just returned, owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the interface named in `request` and writes its flags into
    // the union; `request` outlives the call and the descriptor is open.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) };
    nix::errno::Errno::result(result)?;
    // SAFETY: the kernel just filled `ifru_flags`, the member SIOCGIFFLAGS uses.
    unsafe {
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS reads `request`.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) };
    nix::errno::Errno::result(result).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_none_adds_a_network_namespace() {
        assert!(!unshare_flags(Network::Host).contains(CloneFlags::CLONE_NEWNET));
        assert!(unshare_flags(Network::None).contains(CloneFlags::CLONE_NEWNET));
        // The default network's namespace is PID 1's own; the child stays outside it.
        assert!(!unshare_flags(Network::Default).contains(CloneFlags::CLONE_NEWNET));
        assert!(pid1_unshares_network(Network::Default));
        assert!(!pid1_unshares_network(Network::None) && !pid1_unshares_network(Network::Host));
        assert!(unshare_flags(Network::Host).contains(
            CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWPID
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWUTS
        ));
    }
}
