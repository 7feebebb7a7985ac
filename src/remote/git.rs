//! Fetching a git repository into a directory, with the `git` program, as BuildKit's git
//! source does (`source/git`): the reference is resolved with `ls-remote` (the commit is the
//! cache key), then fetched shallow (`--depth=1`; without it where the server cannot, as
//! git's dumb HTTP protocol), checked out, submodules included unless `submodules=false`,
//! and only the subdirectory asked for kept.
//!
//! The tree is deterministic for a commit: every file, link and directory gets the commit's
//! committer time as mtime (BuildKit does so with `?mtime=commit` or `SOURCE_DATE_EPOCH`; its
//! default is the checkout time, which `?mtime=checkout` asks for here), regular files are
//! 0644 or 0755 (executable in git) and directories 0755, whatever the umask. With
//! `keep_git_dir` (`ADD --keep-git-dir`, `?keep-git-dir`) the checkout keeps a `.git`
//! holding the fetched commit, detached, with `origin` set to the URL (credentials removed);
//! as in BuildKit it is not kept when only a subdirectory is asked for.
//!
//! `git` runs with no system or user configuration, no terminal prompt, `LC_ALL=C`, local
//! `file://` submodules refused (`protocol.file.allow=user`), the proxy variables of the
//! environment passed on. Credentials: what the URL itself carries over HTTP(S); an ssh
//! remote (`git@host:repo`, `ssh://`) is reached through the SSH agent the caller gives
//! ([`FetchOptions::ssh_agent`], BuildKit's `--ssh default`), with ssh run as BuildKit runs
//! it without known hosts (`ssh -F /dev/null -o StrictHostKeyChecking=no`: no user
//! configuration, the host key taken as the server offers it, and never written to a
//! `known_hosts`); without an agent it is refused (exit 2). Not supported yet: BuildKit's
//! `GIT_AUTH_TOKEN`/`GIT_AUTH_HEADER` secrets.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::error::ExitKind;
use crate::source::gitref::{GitRef, MtimePolicy, is_commit_sha};

/// How to fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchOptions {
    /// Keep `.git` (`ADD --keep-git-dir`); the reference's `?keep-git-dir=` counts too.
    pub keep_git_dir: bool,
    /// The commit (hex, full or a prefix) the reference must resolve to (`ADD --checksum`);
    /// the reference's own `?checksum=` counts too.
    pub checksum: Option<String>,
    /// The SSH agent socket an ssh remote is fetched through (`--ssh default`); not part of
    /// the cache key.
    pub ssh_agent: Option<PathBuf>,
}

/// A reference resolved to a commit, before anything is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The ref fetched: `refs/heads/main`, `refs/tags/v1`, or the commit itself.
    pub reference: String,
    /// The commit checked out (full hex): the cache key of the tree, with the options that
    /// change it ([`Resolved::cache_key`]).
    pub commit: String,
}

/// A fetched tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// What was fetched.
    pub resolved: Resolved,
    /// The commit's committer time, in seconds since the epoch.
    pub commit_time: i64,
    /// The directory holding the tree.
    pub dir: PathBuf,
}

/// What can go wrong fetching a repository.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// An ssh remote with no SSH agent to fetch it with.
    #[error(
        "{remote}: git over ssh needs an SSH agent: pass --ssh default (the agent of $SSH_AUTH_SOCK) or --ssh default=KEYFILE"
    )]
    SshNeedsAgent {
        /// The remote.
        remote: String,
    },
    /// The `--checksum` given is not a commit.
    #[error("invalid checksum {checksum} for Git URL, expected hex commit hash")]
    InvalidChecksum {
        /// The value given.
        checksum: String,
    },
    /// `--checksum` and the URL's `?checksum=` disagree.
    #[error("checksum mismatch {given:?} != {url:?}")]
    ChecksumConflict {
        /// `--checksum`.
        given: String,
        /// The URL's.
        url: String,
    },
    /// The reference resolved to another commit than the checksum names.
    #[error("{remote}: expected checksum to match {checksum}, got {commit}")]
    ChecksumMismatch {
        /// The remote.
        remote: String,
        /// The checksum expected.
        checksum: String,
        /// What the reference resolved to.
        commit: String,
    },
    /// The repository has no such branch, tag or ref.
    #[error("{remote}: repository does not contain ref {reference}")]
    NoSuchRef {
        /// The remote.
        remote: String,
        /// The reference asked for.
        reference: String,
    },
    /// `?fetch-by-commit` without a full commit to fetch.
    #[error("{remote}: fetch-by-commit requires a full commit SHA checksum")]
    FetchByCommit {
        /// The remote.
        remote: String,
    },
    /// The subdirectory asked for is missing, not a directory, or reached through a link.
    #[error("{remote}: invalid subdir {subdir}: {reason}")]
    Subdir {
        /// The remote.
        remote: String,
        /// The subdirectory.
        subdir: String,
        /// What is wrong.
        reason: String,
    },
    /// The `git` program could not be started.
    #[error("cannot run git (is it installed?)")]
    NoGit(#[source] io::Error),
    /// A `git` command failed.
    #[error("{remote}: git {command} failed ({status}): {stderr}")]
    Command {
        /// The remote.
        remote: String,
        /// The git subcommand and its arguments (credentials removed).
        command: String,
        /// Its exit status.
        status: String,
        /// What it said (last lines).
        stderr: String,
    },
    /// A file operation on the checkout failed.
    #[error("{}: {operation}", path.display())]
    Io {
        /// What was being done.
        operation: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl GitError {
    /// The exit status this error gives: a reference that cannot be fetched as written is
    /// bad input (2); a failed fetch or a commit that does not match is a failed build (1).
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            Self::SshNeedsAgent { .. }
            | Self::InvalidChecksum { .. }
            | Self::ChecksumConflict { .. }
            | Self::FetchByCommit { .. } => ExitKind::BadInput,
            _ => ExitKind::Failed,
        }
    }
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> GitError + use<> {
    let path = path.to_owned();
    move |source| GitError::Io {
        operation,
        path,
        source,
    }
}

impl Resolved {
    /// A cache key for the tree [`fetch`] makes: the commit and what else shapes the tree
    /// (subdirectory, `.git` kept, submodules, mtime policy), not the URL spelling, the
    /// ref name or the checksum.
    pub fn cache_key(&self, git: &GitRef, options: &FetchOptions) -> String {
        let mut key = format!("git:{}", self.commit);
        if let Some(subdir) = &git.subdir {
            key.push_str(&format!(";subdir={subdir}"));
        }
        if keeps_git_dir(git, options) {
            key.push_str(";keep-git-dir");
        }
        if git.submodules == Some(false) {
            key.push_str(";no-submodules");
        }
        if git.mtime == Some(MtimePolicy::Checkout) {
            key.push_str(";mtime=checkout");
        }
        key
    }
}

fn keeps_git_dir(git: &GitRef, options: &FetchOptions) -> bool {
    (options.keep_git_dir || git.keep_git_dir == Some(true)) && git.subdir.is_none()
}

/// The commit the reference names, as BuildKit resolves it (`ls-remote`, preferring an
/// exact ref, then a branch, then a tag; a full commit id is taken as it is), checked
/// against the checksum.
///
/// # Errors
/// [`GitError`]: an ssh remote without an agent, a bad or conflicting checksum, a ref the
/// repository does not have, a checksum that does not match, `git` failing.
pub fn resolve(git: &GitRef, options: &FetchOptions) -> Result<Resolved, GitError> {
    let git_cli = Git::new(git, options)?;
    let checksum = checksum(git, options)?;
    let remote = git.redacted_remote();
    let check = |commit: &str, peeled: Option<&str>| match &checksum {
        Some(checksum)
            if !commit.starts_with(checksum.as_str())
                && !peeled.is_some_and(|peeled| peeled.starts_with(checksum.as_str())) =>
        {
            Err(GitError::ChecksumMismatch {
                remote: remote.clone(),
                checksum: checksum.clone(),
                commit: peeled.unwrap_or(commit).to_owned(),
            })
        }
        _ => Ok(()),
    };
    if git.fetch_by_commit {
        let commit = checksum
            .clone()
            .filter(|checksum| is_commit_sha(checksum))
            .ok_or_else(|| GitError::FetchByCommit {
                remote: remote.clone(),
            })?;
        let reference = match &git.reference {
            Some(reference) if !reference.starts_with("refs/") => format!("refs/heads/{reference}"),
            Some(reference) => reference.clone(),
            None => commit.clone(),
        };
        return Ok(Resolved { reference, commit });
    }
    let reference = match &git.reference {
        Some(reference) if is_commit_sha(reference) => {
            check(reference, None)?;
            return Ok(Resolved {
                reference: reference.clone(),
                commit: reference.clone(),
            });
        }
        Some(reference) => reference.clone(),
        None => git_cli.default_branch()?,
    };
    let output = git_cli.run_remote(
        &["ls-remote", "--"],
        &[&reference, &format!("{reference}^{{}}")],
    )?;
    let text = String::from_utf8_lossy(&output.stdout);
    let bare = reference.trim_start_matches("refs/");
    let partial = format!("refs/{bare}");
    let head = format!("refs/heads/{}", reference.trim_start_matches("refs/heads/"));
    let tag = format!("refs/tags/{}", reference.trim_start_matches("refs/tags/"));
    let peeled_tag = format!("{tag}^{{}}");
    let (mut exact, mut branch, mut tagged, mut peeled) = (None, None, None, None);
    for line in text.lines() {
        let Some((sha, name)) = line.split_once('\t') else {
            continue;
        };
        let found = Some((sha.to_owned(), name.to_owned()));
        if name == head {
            branch = found;
        } else if name == tag {
            tagged = found;
        } else if name == peeled_tag {
            peeled = Some(sha.to_owned());
        } else if name == partial {
            exact = found;
        }
    }
    // git checkout prefers branches when a name is ambiguous.
    let (chosen, peeled) = match exact.or(branch) {
        Some(found) => (found, None),
        None => match tagged {
            Some(found) => (found, peeled),
            None => {
                return Err(GitError::NoSuchRef { remote, reference });
            }
        },
    };
    let (sha, name) = chosen;
    check(&sha, peeled.as_deref())?;
    // An annotated tag: the commit it points at.
    let commit = peeled.unwrap_or(sha);
    Ok(Resolved {
        reference: name,
        commit,
    })
}

/// The checksum to check: `--checksum` and the URL's own, which must agree; a hex string.
fn checksum(git: &GitRef, options: &FetchOptions) -> Result<Option<String>, GitError> {
    let value = match (&options.checksum, &git.checksum) {
        (Some(given), Some(url)) if given != url => {
            return Err(GitError::ChecksumConflict {
                given: given.clone(),
                url: url.clone(),
            });
        }
        (Some(value), _) | (None, Some(value)) => value.clone(),
        (None, None) => return Ok(None),
    };
    if value.is_empty() || !value.chars().all(|ch| ch.is_ascii_hexdigit()) {
        return Err(GitError::InvalidChecksum { checksum: value });
    }
    Ok(Some(value.to_lowercase()))
}

/// Fetches what `resolved` names into `dest` (which must not exist; its parent must), as
/// described in the module documentation.
///
/// # Errors
/// [`GitError`]: `git` failing (network, authentication, a commit the server will not
/// give), a fetched ref that moved to another commit, a bad subdirectory, file system
/// errors.
pub fn fetch(
    git: &GitRef,
    resolved: &Resolved,
    dest: &Path,
    options: &FetchOptions,
) -> Result<Checkout, GitError> {
    let git_cli = Git::new(git, options)?;
    let remote = git.redacted_remote();
    let parent = dest.parent().unwrap_or(Path::new("."));
    let work = tempfile::Builder::new()
        .prefix(".git-checkout-")
        .tempdir_in(parent)
        .map_err(io_error("creating a checkout directory in", parent))?;
    let repo = work.path().join("tree");
    let local = git_cli.at(&repo);
    // A repository of SHA-256 objects (64 hex digits ids) is fetched into one of its kind.
    let object_format = if resolved.commit.len() == 64 {
        "--object-format=sha256"
    } else {
        "--object-format=sha1"
    };
    git_cli.run(&[
        "-c",
        // An unborn branch no remote names: git refuses to fetch into the checked-out one.
        "init.defaultBranch=xbuild-unborn-head",
        "init",
        "-q",
        object_format,
        &repo.to_string_lossy(),
    ])?;
    local.run(&["remote", "add", "origin", &git.remote])?;
    // A named ref lands under its own name (a tag as a tag), a commit as FETCH_HEAD.
    let refspec = if is_commit_sha(&resolved.reference) {
        resolved.commit.clone()
    } else {
        format!("+{0}:{0}", resolved.reference)
    };
    let fetched = local.fetch(&refspec);
    if let Err(error) = fetched {
        // A server that gives no commit by id (`uploadpack.allowReachableSHA1InWant` off):
        // everything, then the commit.
        if !is_commit_sha(&resolved.reference) {
            return Err(error);
        }
        local.run_remote(
            &["fetch", "-q", "--no-tags", "origin"],
            &[
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ],
        )?;
    }
    let commit_object = format!("{}^{{commit}}", resolved.commit);
    let found = local.run(&["rev-parse", "--verify", "--quiet", &commit_object]);
    let found = found
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
    if found.as_deref() != Some(resolved.commit.as_str()) {
        return Err(GitError::Command {
            remote,
            command: format!("fetch {}", resolved.reference),
            status: "done".to_owned(),
            stderr: format!(
                "commit {} is not in what was fetched (the ref moved while fetching?): build again",
                resolved.commit
            ),
        });
    }
    local.run(&[
        "-c",
        "advice.detachedHead=false",
        "checkout",
        "-q",
        "--detach",
        &resolved.commit,
    ])?;
    if git.submodules != Some(false) && repo.join(".gitmodules").exists() {
        local.submodules()?;
    }
    let time_output = local.run(&["log", "-1", "--format=%ct", &resolved.commit])?;
    let commit_time: i64 = String::from_utf8_lossy(&time_output.stdout)
        .trim()
        .parse()
        .map_err(|_| GitError::Command {
            remote: remote.clone(),
            command: "log -1 --format=%ct".to_owned(),
            status: "done".to_owned(),
            stderr: "no commit time".to_owned(),
        })?;
    let keep = keeps_git_dir(git, options);
    if keep {
        // What BuildKit leaves: the commit, detached; origin without credentials; no reflog,
        // no FETCH_HEAD.
        local.run(&["remote", "set-url", "origin", &remote])?;
        local.run(&["reflog", "expire", "--all", "--expire=now"])?;
        let fetch_head = repo.join(".git/FETCH_HEAD");
        match fs::remove_file(&fetch_head) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                return Err(io_error("removing", &fetch_head)(error));
            }
            _ => {}
        }
    } else {
        let dot_git = repo.join(".git");
        fs::remove_dir_all(&dot_git).map_err(io_error("removing", &dot_git))?;
        // Submodules' own `.git` files point into the removed directory.
        remove_submodule_git_files(&repo)?;
    }
    let tree = match &git.subdir {
        None => repo.clone(),
        Some(subdir) => subdir_of(&repo, subdir).map_err(|reason| GitError::Subdir {
            remote: remote.clone(),
            subdir: subdir.clone(),
            reason,
        })?,
    };
    normalize_modes(&tree)?;
    if git.mtime != Some(MtimePolicy::Checkout) {
        set_mtimes(&tree, commit_time)?;
    }
    fs::rename(&tree, dest).map_err(io_error("moving the checkout to", dest))?;
    Ok(Checkout {
        resolved: resolved.clone(),
        commit_time,
        dir: dest.to_owned(),
    })
}

/// `subdir` inside `root`, every component a real directory (no link out of the tree).
fn subdir_of(root: &Path, subdir: &str) -> Result<PathBuf, String> {
    let mut path = root.to_owned();
    for part in subdir.split('/').filter(|part| !part.is_empty()) {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!("{part} is a symbolic link"));
            }
            Ok(_) => return Err(format!("{part} is not a directory")),
            Err(error) => return Err(error.to_string()),
        }
    }
    Ok(path)
}

/// Removes the `.git` files submodules have when the repository's `.git` is not kept.
fn remove_submodule_git_files(root: &Path) -> Result<(), GitError> {
    for entry in walk(root)? {
        if entry.file_name().is_some_and(|name| name == ".git") {
            let meta = fs::symlink_metadata(&entry).map_err(io_error("reading", &entry))?;
            if meta.is_dir() {
                fs::remove_dir_all(&entry).map_err(io_error("removing", &entry))?;
            } else {
                fs::remove_file(&entry).map_err(io_error("removing", &entry))?;
            }
        }
    }
    Ok(())
}

/// Every path under `root` (not following links), parents before children.
fn walk(root: &Path) -> Result<Vec<PathBuf>, GitError> {
    let mut paths = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).map_err(io_error("reading", &dir))?;
        for entry in entries {
            let entry = entry.map_err(io_error("reading", &dir))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(io_error("reading", &path))?;
            if file_type.is_dir() {
                pending.push(path.clone());
            }
            paths.push(path);
        }
    }
    Ok(paths)
}

/// Regular files 0644, or 0755 when executable; directories 0755 (links have no mode).
fn normalize_modes(root: &Path) -> Result<(), GitError> {
    let mut paths = walk(root)?;
    paths.push(root.to_owned());
    for path in paths {
        let meta = fs::symlink_metadata(&path).map_err(io_error("reading", &path))?;
        let mode = if meta.is_dir() {
            0o755
        } else if meta.is_file() {
            if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            }
        } else {
            continue;
        };
        if meta.permissions().mode() & 0o7777 != mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(io_error("setting the mode of", &path))?;
        }
    }
    Ok(())
}

/// Every file, link and directory gets `time` as mtime (and atime); directories last, so
/// that setting a child's time does not change its parent's.
fn set_mtimes(root: &Path, time: i64) -> Result<(), GitError> {
    let mut paths = walk(root)?;
    paths.push(root.to_owned());
    let spec = nix::sys::time::TimeSpec::new(time, 0);
    let (dirs, others): (Vec<PathBuf>, Vec<PathBuf>) = paths
        .into_iter()
        .partition(|path| fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir()));
    // Deepest directories first.
    let mut dirs = dirs;
    dirs.sort_by_key(|dir| std::cmp::Reverse(dir.components().count()));
    for path in others.iter().chain(dirs.iter()) {
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &spec,
            &spec,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|errno| io_error("setting the time of", path)(io::Error::from(errno)))?;
    }
    Ok(())
}

/// The `git` program, run the way BuildKit runs it.
struct Git {
    /// The remote, credentials removed, for messages.
    remote: String,
    /// The remote as given (git needs its credentials).
    url: String,
    /// `-C <dir>`, when set.
    dir: Option<PathBuf>,
    /// The SSH agent of an ssh remote.
    ssh_agent: Option<PathBuf>,
}

/// How git runs ssh, as BuildKit's git source does without known hosts (`getGitSSHCommand`):
/// no configuration file, the host key accepted as offered; here also never recorded, and
/// never a password prompt.
const GIT_SSH_COMMAND: &str =
    "ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes";

impl Git {
    fn new(git: &GitRef, options: &FetchOptions) -> Result<Self, GitError> {
        let ssh_agent = if git.is_ssh() {
            Some(
                options
                    .ssh_agent
                    .clone()
                    .ok_or_else(|| GitError::SshNeedsAgent {
                        remote: git.redacted_remote(),
                    })?,
            )
        } else {
            None
        };
        Ok(Self {
            remote: git.redacted_remote(),
            url: git.remote.clone(),
            dir: None,
            ssh_agent,
        })
    }

    /// The same program, run in `dir`.
    fn at(&self, dir: &Path) -> Self {
        Self {
            remote: self.remote.clone(),
            url: self.url.clone(),
            dir: Some(dir.to_owned()),
            ssh_agent: self.ssh_agent.clone(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("git");
        command.env_clear();
        for name in [
            "PATH",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "no_proxy",
            "all_proxy",
        ] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", "/dev/null")
            .env("LC_ALL", "C");
        // ssh only for an ssh remote, through its agent; otherwise a submodule over ssh fails.
        match &self.ssh_agent {
            Some(agent) => command
                .env("GIT_SSH_COMMAND", GIT_SSH_COMMAND)
                .env("SSH_AUTH_SOCK", agent),
            None => command.env("GIT_SSH_COMMAND", "false"),
        };
        command.args(["-c", "protocol.file.allow=user"]);
        if let Some(dir) = &self.dir {
            command.arg("-C").arg(dir);
        }
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs `git args`; a failure names the command.
    fn run(&self, args: &[&str]) -> Result<Output, GitError> {
        self.run_remote(args, &[])
    }

    /// Runs `git args refs`, the refs shown in messages as written.
    fn run_remote(&self, args: &[&str], refs: &[&str]) -> Result<Output, GitError> {
        let mut all: Vec<&str> = args.to_vec();
        // `ls-remote` and `fetch` name the remote: the URL goes first, after the options.
        let needs_url = args.first() == Some(&"ls-remote");
        if needs_url {
            all.push(&self.url);
        }
        all.extend_from_slice(refs);
        let output = self.command(&all).output().map_err(GitError::NoGit)?;
        if output.status.success() {
            return Ok(output);
        }
        let mut shown: Vec<&str> = args.to_vec();
        if needs_url {
            shown.push(&self.remote);
        }
        shown.extend_from_slice(refs);
        Err(GitError::Command {
            remote: self.remote.clone(),
            command: shown.join(" "),
            status: output.status.to_string(),
            stderr: tail(&String::from_utf8_lossy(&output.stderr)),
        })
    }

    /// `ls-remote --symref <remote> HEAD`: the default branch.
    fn default_branch(&self) -> Result<String, GitError> {
        let output = self.run_remote(&["ls-remote", "--symref"], &["HEAD"])?;
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| {
                let rest = line.strip_prefix("ref: ")?;
                let (reference, name) = rest.split_once('\t')?;
                (name == "HEAD").then(|| reference.to_owned())
            })
            .ok_or_else(|| GitError::NoSuchRef {
                remote: self.remote.clone(),
                reference: "HEAD (the default branch)".to_owned(),
            })
    }

    /// A shallow fetch of `refspec` from origin; again without `--depth` when the server
    /// cannot make a shallow pack (git's dumb HTTP protocol).
    fn fetch(&self, refspec: &str) -> Result<(), GitError> {
        let shallow = self.run_remote(
            &["fetch", "-q", "--no-tags", "--depth=1", "origin"],
            &[refspec],
        );
        match shallow {
            Ok(_) => Ok(()),
            Err(GitError::Command { stderr, .. })
                if stderr.contains("shallow") || stderr.contains("--depth") =>
            {
                self.run_remote(&["fetch", "-q", "--no-tags", "origin"], &[refspec])
                    .map(drop)
            }
            Err(error) => Err(error),
        }
    }

    /// `submodule update --init --recursive`, shallow where the servers allow it.
    fn submodules(&self) -> Result<(), GitError> {
        let shallow = self.run(&[
            "submodule",
            "update",
            "-q",
            "--init",
            "--recursive",
            "--depth=1",
        ]);
        match shallow {
            Ok(_) => Ok(()),
            Err(GitError::Command { stderr, .. })
                if stderr.contains("shallow") || stderr.contains("--depth") =>
            {
                self.run(&["submodule", "update", "-q", "--init", "--recursive"])
                    .map(drop)
            }
            Err(error) => Err(error),
        }
    }
}

/// The last lines of a command's error output.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    let start = lines.len().saturating_sub(6);
    lines[start..].join("\n")
}
