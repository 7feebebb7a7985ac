//! Locks between xbuild processes: `flock(2)` on files under `locks/`. A lock is released
//! when its file is closed, so a killed process never leaves one behind.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Errors taking a lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file cannot be opened.
    #[error("opening the lock file {path}")]
    Open {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `flock` failed.
    #[error("locking {path}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// Other processes kept the lock longer than we wait.
    #[error(
        "another xbuild process is using the store ({path} held for more than {seconds} s); try again when it has finished"
    )]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        seconds: u64,
    },
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct StoreLock {
    lock: Flock<File>,
    path: PathBuf,
}

fn open(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| LockError::Open {
            path: path.to_path_buf(),
            source,
        })
}

impl StoreLock {
    fn take(path: &Path, arg: FlockArg) -> Result<Self, LockError> {
        let file = open(path)?;
        let lock = Flock::lock(file, arg).map_err(|(_, source)| LockError::Lock {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            lock,
            path: path.to_path_buf(),
        })
    }

    /// Takes a shared lock, waiting for exclusive holders.
    ///
    /// # Errors
    /// The file cannot be opened or locked.
    pub fn shared(path: &Path) -> Result<Self, LockError> {
        Self::take(path, FlockArg::LockShared)
    }

    /// Takes an exclusive lock, waiting for every other holder.
    ///
    /// # Errors
    /// The file cannot be opened or locked.
    pub fn exclusive(path: &Path) -> Result<Self, LockError> {
        Self::take(path, FlockArg::LockExclusive)
    }

    /// Turns this (shared) lock into an exclusive one for the duration of `action`, then back
    /// to shared. Waits at most `timeout` for other holders to go.
    ///
    /// flock conversions are not atomic (the shared lock is dropped before the exclusive one
    /// is taken), which is fine here: nothing relies on holding the lock in between.
    ///
    /// # Errors
    /// [`LockError::Busy`] after `timeout`, or what `action` returns.
    pub fn while_exclusive<T, E: From<LockError>>(
        &self,
        timeout: Duration,
        action: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let start = Instant::now();
        loop {
            match self.lock.relock(FlockArg::LockExclusiveNonblock) {
                Ok(()) => break,
                Err(Errno::EWOULDBLOCK) if start.elapsed() < timeout => {
                    self.relock_shared()?;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(Errno::EWOULDBLOCK) => {
                    self.relock_shared()?;
                    return Err(LockError::Busy {
                        path: self.path.clone(),
                        seconds: timeout.as_secs(),
                    }
                    .into());
                }
                Err(source) => {
                    return Err(LockError::Lock {
                        path: self.path.clone(),
                        source,
                    }
                    .into());
                }
            }
        }
        let result = action();
        self.relock_shared()?;
        result
    }

    fn relock_shared(&self) -> Result<(), LockError> {
        self.lock
            .relock(FlockArg::LockShared)
            .map_err(|source| LockError::Lock {
                path: self.path.clone(),
                source,
            })
    }
}
