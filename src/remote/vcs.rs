//! Whether a local build context is a clean git checkout, and of which commit and remote:
//! the provenance names the commit as a resolved dependency (a local directory cannot be
//! fetched again; a commit can), as buildx records `vcs:revision` and `vcs:source`.
//!
//! Asks the `git` program (which knows worktrees, packed refs, SHA-256 repositories and the
//! index). A tree with any change, staged or not, or any untracked file, is not clean: its
//! files are not those of the commit. No `git`, no repository, a repository git refuses
//! (another owner), or any failure: not a checkout, and the provenance says the context is
//! a local directory.
//!
//! What git runs is limited to what `git status` needs: no fsmonitor hook, no optional
//! locks (nothing written into the repository), no pager, no system or global
//! configuration. A repository's own `.git/config` can still name clean filters, which
//! `git status` runs as buildx's does: the user chose to build that directory.

use std::path::Path;
use std::process::{Command, Stdio};

/// A clean git checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanCheckout {
    /// The commit checked out (40 hex digits, or 64 in a SHA-256 repository).
    pub commit: String,
    /// The `origin` remote's URL (else the first remote's), as configured.
    pub remote: Option<String>,
}

/// The clean checkout `dir` is in, if it is in one.
pub fn clean_checkout(dir: &Path) -> Option<CleanCheckout> {
    let commit = git(dir, &["rev-parse", "--verify", "HEAD^{commit}"])?;
    let is_hex = |text: &str| {
        matches!(text.len(), 40 | 64) && text.bytes().all(|byte| byte.is_ascii_hexdigit())
    };
    if !is_hex(&commit) {
        return None;
    }
    let status = git(dir, &["status", "--porcelain", "--untracked-files=normal"])?;
    if !status.is_empty() {
        return None;
    }
    let remote = git(dir, &["remote", "get-url", "origin"]).or_else(|| {
        let remotes = git(dir, &["remote"])?;
        let first = remotes.lines().next()?.to_owned();
        git(dir, &["remote", "get-url", &first])
    });
    Some(CleanCheckout {
        commit: commit.to_ascii_lowercase(),
        remote: remote.filter(|url| !url.is_empty()),
    })
}

/// What `git ARGS` prints in `dir`, trimmed; `None` when it cannot run or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "--no-pager",
            "--no-optional-locks",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.untrackedCache=false",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8(output.stdout).ok()?.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, args: &[&str]) -> bool {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    #[test]
    fn a_clean_checkout_gives_its_commit_and_remote_and_a_change_gives_none() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        if !run(dir, &["init", "-q"]) {
            eprintln!("skipped: no git");
            return;
        }
        assert_eq!(clean_checkout(dir), None, "no commit yet");
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/f"), "1\n").unwrap();
        assert!(run(dir, &["add", "."]));
        assert!(run(dir, &["commit", "-q", "-m", "one"]));
        assert!(run(
            dir,
            &["remote", "add", "upstream", "https://example.invalid/r.git"]
        ));
        let head = git(dir, &["rev-parse", "HEAD"]).unwrap();
        // From a subdirectory too (a context inside a repository).
        let found = clean_checkout(&dir.join("sub")).unwrap();
        assert_eq!(found.commit, head);
        assert_eq!(
            found.remote.as_deref(),
            Some("https://example.invalid/r.git")
        );
        assert!(run(
            dir,
            &["remote", "add", "origin", "https://example.invalid/o.git"]
        ));
        assert_eq!(
            clean_checkout(dir).unwrap().remote.as_deref(),
            Some("https://example.invalid/o.git")
        );
        // A modified file, then an untracked one: not clean.
        std::fs::write(dir.join("sub/f"), "2\n").unwrap();
        assert_eq!(clean_checkout(dir), None);
        assert!(run(dir, &["checkout", "-q", "--", "sub/f"]));
        assert!(clean_checkout(dir).is_some());
        std::fs::write(dir.join("new"), "").unwrap();
        assert_eq!(clean_checkout(dir), None);
    }

    #[test]
    fn a_plain_directory_is_no_checkout() {
        let temp = tempfile::tempdir().unwrap();
        assert_eq!(clean_checkout(temp.path()), None);
    }
}
