//! The pseudo-terminal of an interactive step ([`super::Stdio::Terminal`]): allocated by the
//! parent, its slave becomes the step's stdin, stdout, stderr and controlling terminal; the
//! parent puts its own terminal in raw mode (so ^C, ^Z and line editing reach the step's
//! terminal, as with `docker run -it`) and copies bytes both ways until the step is gone.
//!
//! The window size is copied from our terminal once, at start (a resize while the step
//! runs is not forwarded yet).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::termios::{self, SetArg, Termios};

use super::channel::Message;

/// A pseudo-terminal pair.
pub(super) struct Pty {
    /// Our end.
    pub(super) master: OwnedFd,
    /// The step's end.
    pub(super) slave: OwnedFd,
    /// The slave's path on the host (`/dev/pts/N`).
    pub(super) slave_path: PathBuf,
}

impl Pty {
    /// Opens a pair with our terminal's window size (when stdin is a terminal).
    pub(super) fn open() -> std::io::Result<Self> {
        let stdin = std::io::stdin();
        let size = window_size(stdin.as_fd());
        let pair = nix::pty::openpty(size.as_ref(), None)?;
        let slave_path = std::fs::read_link(format!("/proc/self/fd/{}", pair.slave.as_raw_fd()))?;
        Ok(Self {
            master: pair.master,
            slave: pair.slave,
            slave_path,
        })
    }
}

fn window_size(fd: BorrowedFd<'_>) -> Option<nix::pty::Winsize> {
    let mut size = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into `size`, which outlives the call.
    let result = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (result == 0).then_some(size)
}

/// Our terminal in raw mode until dropped (then restored as it was).
struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    fn enter() -> Self {
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(stdin.as_fd()) else {
            return Self { saved: None };
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        if termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).is_err() {
            return Self { saved: None };
        }
        Self { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, saved);
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(count) => bytes = &bytes[count..],
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

/// Copies our stdin to `master` and `master` to our stdout, and collects the channel's
/// messages, until the terminal is closed (every process of the step is gone) and the
/// channel too. At the end of our stdin (not a terminal), the step's terminal gets an
/// end-of-file character, unless stdin was empty (`/dev/null`: nothing to end).
pub(super) fn relay(master: &OwnedFd, channel: &OwnedFd) -> std::io::Result<Vec<Message>> {
    let _raw = RawMode::enter();
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let fds = [stdin.as_fd(), master.as_fd(), channel.as_fd()];
    let mut open = [true, true, true];
    let mut messages = Vec::new();
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut forwarded = false;
    while open[1] || open[2] {
        for index in super::poll_readable(&fds, &open)? {
            let count = match nix::unistd::read(fds[index], &mut chunk) {
                Ok(count) => count,
                Err(Errno::EINTR | Errno::EAGAIN) => continue,
                // The master reads EIO once no process holds the slave open.
                Err(Errno::EIO) if index == 1 => 0,
                Err(errno) => return Err(errno.into()),
            };
            let bytes = &chunk[..count];
            match index {
                0 if count == 0 => {
                    open[0] = false;
                    if forwarded {
                        // ^D: end of file for a step reading its terminal in canonical mode.
                        let _ = write_all(master.as_fd(), &[4]);
                    }
                }
                0 => {
                    forwarded = true;
                    write_all(master.as_fd(), bytes)?;
                }
                1 if count == 0 => open[1] = false,
                1 => write_all(stdout.as_fd(), bytes)?,
                _ if count == 0 => open[2] = false,
                _ => {
                    pending.extend_from_slice(bytes);
                    while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
                        messages.extend(Message::parse(&pending[..end]));
                        pending.drain(..=end);
                    }
                }
            }
        }
    }
    Ok(messages)
}
