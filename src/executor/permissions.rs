//! The owner (`--chown`) and mode (`--chmod`) of copied files.

use std::path::PathBuf;

use super::error::ExecutorError;
use crate::layer::tree::Stack;

/// The most of `/etc/passwd` or `/etc/group` read to resolve `--chown` (a base image's file
/// could be a link to `/dev/zero`, or just huge).
pub(crate) const ACCOUNTS_LIMIT: u64 = 16 * 1024 * 1024;

/// `user[:group]` to numbers, through the state's `/etc/passwd` and `/etc/group`.
pub(crate) fn resolve_chown(lowers: &[PathBuf], spec: &str) -> Result<(u64, u64), ExecutorError> {
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let stack = Stack::new(lowers);
    let read = |file: &str| -> Result<String, ExecutorError> {
        let data = stack
            .read_file(file, ACCOUNTS_LIMIT)
            .map_err(|error| ExecutorError::Chown {
                reason: error.to_string(),
            })?;
        Ok(String::from_utf8_lossy(&data.unwrap_or_default()).into_owned())
    };
    let find = |text: &str, name: &str| -> Option<(u64, u64)> {
        text.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name) && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().unwrap_or(0))))
                .flatten()
        })
    };
    let (uid, primary) = match user.parse::<u64>() {
        Ok(uid) => (
            uid,
            find(&read("/etc/passwd")?, user).map_or(uid, |(_, gid)| gid),
        ),
        Err(_) => find(&read("/etc/passwd")?, user).ok_or_else(|| ExecutorError::Chown {
            reason: format!("no user {user:?} in the image"),
        })?,
    };
    let gid = match group {
        None => {
            if user.parse::<u64>().is_ok() {
                uid
            } else {
                primary
            }
        }
        Some(group) => match group.parse::<u64>() {
            Ok(gid) => gid,
            Err(_) => find(&read("/etc/group")?, group)
                .map(|(gid, _)| gid)
                .ok_or_else(|| ExecutorError::Chown {
                    reason: format!("no group {group:?} in the image"),
                })?,
        },
    };
    Ok((uid, gid))
}

/// `--chmod`: an octal mode, or chmod(1)'s symbolic form applied to each file's own mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ModeChange {
    /// `--chmod=0755`.
    Set(u32),
    /// `--chmod=u+x,g-w,o=r` (validated when the step starts).
    Symbolic(String),
}

impl ModeChange {
    pub(crate) fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Self::Set(mode) => mode & 0o7777,
            Self::Symbolic(spec) => apply_symbolic_mode(spec, mode, is_dir).unwrap_or(mode),
        }
    }
}

/// Applies chmod(1)'s symbolic clauses (`[ugoa]*[+-=][rwxXst]*`, comma separated) to `mode`.
/// An empty "who" means all (no umask, as BuildKit); `X` sets execute for directories and for
/// files that already have an execute bit.
pub(crate) fn apply_symbolic_mode(spec: &str, mode: u32, is_dir: bool) -> Result<u32, String> {
    let mut mode = mode & 0o7777;
    for clause in spec.split(',') {
        let op_at = clause
            .find(['+', '-', '='])
            .ok_or_else(|| format!("\"{clause}\" has no +, - or ="))?;
        let (who, rest) = clause.split_at(op_at);
        let mut who_mask = 0;
        for c in who.chars() {
            who_mask |= match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                other => return Err(format!("unknown \"who\" {other:?} in \"{clause}\"")),
            };
        }
        if who_mask == 0 {
            who_mask = 0o7777;
        }
        let mut chars = rest.chars();
        let op = chars.next().unwrap_or('=');
        let mut bits = 0;
        for c in chars {
            bits |= match c {
                'r' => 0o444,
                'w' => 0o222,
                'x' => 0o111,
                'X' if is_dir || mode & 0o111 != 0 => 0o111,
                'X' => 0,
                's' => 0o6000,
                't' => 0o1000,
                other => return Err(format!("unknown permission {other:?} in \"{clause}\"")),
            };
        }
        let bits = bits & who_mask;
        mode = match op {
            '+' => mode | bits,
            '-' => mode & !bits,
            _ => (mode & !who_mask) | bits,
        };
    }
    Ok(mode)
}

#[cfg(test)]
mod symbolic_mode_tests {
    use super::apply_symbolic_mode;

    #[test]
    fn symbolic_modes_follow_chmod() {
        assert_eq!(apply_symbolic_mode("u+x", 0o644, false), Ok(0o744));
        assert_eq!(apply_symbolic_mode("g-w,o=r", 0o664, false), Ok(0o644));
        assert_eq!(apply_symbolic_mode("a+X", 0o644, false), Ok(0o644));
        assert_eq!(apply_symbolic_mode("a+X", 0o644, true), Ok(0o755));
        assert_eq!(apply_symbolic_mode("+x", 0o600, false), Ok(0o711));
        assert_eq!(apply_symbolic_mode("u=rwx,go=", 0o644, false), Ok(0o700));
        assert_eq!(apply_symbolic_mode("u+s", 0o755, false), Ok(0o4755));
        assert!(apply_symbolic_mode("q+x", 0o644, false).is_err());
        assert!(apply_symbolic_mode("u+z", 0o644, false).is_err());
        assert!(apply_symbolic_mode("ux", 0o644, false).is_err());
    }
}
