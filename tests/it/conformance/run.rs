//! Running one case on one platform: a fresh store (hard-linked from the seed), the context
//! made from `context/` and the case's entries, the served files and git repositories (a
//! folder's script runs once per test process, its repositories are shared), then
//! each build with the real `xbuild` binary and its judgement (`judge`). Returns the first
//! difference from the expectations.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::case::{Build, Case, Entry, EntryKind, Folder, ServedFile, TarMember, substitute};
use super::http::{EchoServer, Fixed, SiteHandle};
use super::judge::{self, Image};

/// How long one `xbuild build` may take before it is killed and the case fails.
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// The build platform of the harness (the host; the tests run on amd64 machines).
const BUILD_PLATFORM: &str = "linux/amd64";

/// What every case run of the process shares: the seed store, and the served directories
/// of folders with a `serve.script` (made once per folder: git repositories are only read).
pub(crate) struct Shared {
    /// The seed store's parent directory.
    seed: PathBuf,
    /// Where the folders' served directories are made.
    served_root: tempfile::TempDir,
    /// Per folder id: its served site and the revisions of its repositories.
    sites: std::sync::Mutex<HashMap<String, std::sync::Arc<Served>>>,
}

/// A folder's served directory, with its site and `revs`.
struct Served {
    site: SiteHandle,
    vars: BTreeMap<String, String>,
}

impl Shared {
    /// Shares the seed at `seed` (made by `seed::make`).
    pub(crate) fn new(seed: &Path) -> Self {
        Self {
            seed: seed.to_owned(),
            served_root: crate::util::temp_dir(),
            sites: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The served site of a folder, made on first use: its fixed files, and what its script
    /// makes (run once, with `$HTTP` set), with the `revs` placeholders. A folder with a
    /// script shares one site (and request log) between its runs; `case.rs` refuses
    /// `http_requests` there.
    fn served(&self, folder: &Folder) -> Result<std::sync::Arc<Served>, String> {
        let mut sites = self.sites.lock().map_err(|_| "lock".to_owned())?;
        if let Some(served) = sites.get(&folder.id) {
            return Ok(served.clone());
        }
        let dir = self.served_root.path().join(folder.id.replace('/', "+"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir serve: {e}"))?;
        let served = std::sync::Arc::new(make_served(folder, &dir)?);
        sites.insert(folder.id.clone(), served.clone());
        Ok(served)
    }
}

/// A site for a folder's `serve`, serving `dir` (the script is run there).
fn make_served(folder: &Folder, dir: &Path) -> Result<Served, String> {
    let mut fixed = HashMap::new();
    let mut vars = BTreeMap::new();
    let Some(serve) = &folder.spec.serve else {
        return Ok(Served {
            site: SiteHandle::new(dir, fixed),
            vars,
        });
    };
    for file in &serve.file {
        fixed.insert(file.path.clone(), served_file(file, folder)?);
    }
    let site = SiteHandle::new(dir, fixed);
    if let Some(script) = &serve.script {
        let status = git_env(Command::new("sh").args(["-euc", script]))
            .current_dir(dir)
            .env("HTTP", site.url())
            .output()
            .map_err(|e| format!("serve script: {e}"))?;
        if !status.status.success() {
            return Err(format!(
                "serve script failed: {}",
                String::from_utf8_lossy(&status.stderr)
            ));
        }
    }
    for (name, spec) in &serve.revs {
        let (repo, rev) = spec
            .split_once(':')
            .ok_or_else(|| format!("revs.{name}: expected repo-dir:rev"))?;
        let output = Command::new("git")
            .args(["rev-parse", rev])
            .current_dir(dir.join(repo))
            .output()
            .map_err(|e| format!("git: {e}"))?;
        if !output.status.success() {
            return Err(format!("git rev-parse {spec} failed"));
        }
        let hash = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        vars.insert(format!("{name}_SHORT"), hash[..8].to_owned());
        vars.insert(name.clone(), hash);
    }
    Ok(Served { site, vars })
}

/// Runs `case` of `folder` for `platform` on a store copied from the shared seed.
pub(crate) fn run(
    folder: &Folder,
    case: &Case,
    platform: &str,
    shared: &Shared,
) -> Result<(), String> {
    let temp = crate::util::temp_dir();
    let path = temp.path().to_owned();
    let _temp = if std::env::var_os("XBUILD_CONFORMANCE_KEEP").is_some() {
        super::report(&format!("keeping {} for {}", path.display(), folder.id));
        let _ = temp.keep();
        None
    } else {
        Some(temp)
    };
    let dir = path.as_path();
    let store = dir.join("store");
    copy_store(&shared.seed.join("store"), &store)?;

    let ctx = dir.join("ctx");
    let source = folder.dir.join("context");
    if source.is_dir() {
        sh(Command::new("cp").arg("-a").arg(&source).arg(&ctx))?;
    } else {
        std::fs::create_dir(&ctx).map_err(|e| format!("mkdir ctx: {e}"))?;
    }
    for entry in &folder.spec.context {
        make_entry(&ctx, entry, folder)?;
    }

    let mut vars = builtin_vars(platform);
    vars.insert("WORK".to_owned(), dir.display().to_string());
    // The case's own folder: directories given as `--build-context NAME={{CASE}}/dir`.
    vars.insert("CASE".to_owned(), folder.dir.display().to_string());
    // A folder with a script shares its site; otherwise each run has its own (request logs).
    let own;
    let shared_site;
    let site: &SiteHandle = if folder
        .spec
        .serve
        .as_ref()
        .is_some_and(|serve| serve.script.is_some())
    {
        shared_site = shared.served(folder)?;
        vars.extend(shared_site.vars.clone());
        &shared_site.site
    } else {
        let served = dir.join("serve");
        std::fs::create_dir(&served).map_err(|e| format!("mkdir serve: {e}"))?;
        own = make_served(folder, &served)?;
        &own.site
    };
    vars.insert("HTTP".to_owned(), site.url());
    let _echo = match folder
        .spec
        .serve
        .as_ref()
        .and_then(|serve| serve.echo.as_deref())
    {
        Some(text) => {
            let echo = EchoServer::start(text).map_err(|e| format!("echo server: {e}"))?;
            vars.insert("ECHO_PORT".to_owned(), echo.port().to_string());
            Some(echo)
        }
        None => None,
    };
    // Placeholders may use each other: resolve them in as many rounds as it takes.
    let mut pending: Vec<(&String, &String)> = folder.spec.vars.iter().collect();
    pending.extend(&case.vars);
    while !pending.is_empty() {
        let before = pending.len();
        let mut waiting = Vec::new();
        for (name, value) in pending {
            match substitute(value, &vars) {
                Ok(value) => {
                    vars.insert(name.clone(), value);
                }
                Err(_) => waiting.push((name, value)),
            }
        }
        if waiting.len() == before {
            let (name, value) = waiting[0];
            return Err(format!(
                "vars.{name}: {}",
                substitute(value, &vars).err().unwrap_or_default()
            ));
        }
        pending = waiting;
    }

    let mut runs = Runs {
        dir: dir.to_owned(),
        images: Vec::new(),
        rootfs: HashMap::new(),
    };
    for (index, build) in case.build.iter().enumerate() {
        std::thread::sleep(Duration::from_secs(build.wait_before));
        for entry in &build.edit {
            make_entry(&ctx, entry, folder)?;
        }
        site.take_log();
        let result = build_once(folder, build, index, platform, &ctx, dir, &vars)?;
        let requests = site.take_log();
        runs.images.push(result.image.clone());
        check_build(&mut runs, build, index, &result, &requests, &vars)
            .map_err(|e| format!("build {index}: {e}"))?;
    }
    Ok(())
}

/// What one `xbuild build` gave.
struct Built {
    code: i32,
    stderr: String,
    image: Image,
    dockerfile_name: String,
}

/// The images and root file systems of the builds of one case run so far.
struct Runs {
    dir: PathBuf,
    images: Vec<Image>,
    rootfs: HashMap<usize, PathBuf>,
}

impl Runs {
    fn rootfs(&mut self, index: usize) -> Result<PathBuf, String> {
        if let Some(path) = self.rootfs.get(&index) {
            return Ok(path.clone());
        }
        let image = self
            .images
            .get(index)
            .ok_or_else(|| format!("no build {index} yet"))?;
        let path = image.unpack(&self.dir.join(format!("unpack-{index}")))?;
        self.rootfs.insert(index, path.clone());
        Ok(path)
    }

    fn digest(&self, index: usize) -> Result<String, String> {
        let image = self
            .images
            .get(index)
            .ok_or_else(|| format!("no build {index} yet"))?;
        Ok(image.inspect()?["Digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }
}

fn check_build(
    runs: &mut Runs,
    build: &Build,
    index: usize,
    built: &Built,
    requests: &[String],
    vars: &BTreeMap<String, String>,
) -> Result<(), String> {
    let expect = &build.expect;
    if built.code != expect.exit {
        return Err(format!(
            "exit code {}, expected {}: {}",
            built.code,
            expect.exit,
            tail(&built.stderr)
        ));
    }
    for needle in &expect.stderr {
        let needle = substitute(needle, vars)?;
        if !built.stderr.contains(&needle) {
            return Err(format!("stderr lacks {needle:?}: {}", tail(&built.stderr)));
        }
    }
    for needle in &expect.not_stderr {
        let needle = substitute(needle, vars)?;
        if built.stderr.contains(&needle) {
            return Err(format!("stderr has {needle:?}"));
        }
    }
    if let Some(line) = expect.line {
        let marker = format!("{}:{line}", built.dockerfile_name);
        let found = built.stderr.match_indices(&marker).any(|(at, _)| {
            !built.stderr[at + marker.len()..].starts_with(|c: char| c.is_ascii_digit())
        });
        if !found {
            return Err(format!(
                "the error does not name {marker}: {}",
                tail(&built.stderr)
            ));
        }
    }
    if let Some(want) = &expect.http_requests {
        let want: Vec<String> = want
            .iter()
            .map(|request| substitute(request, vars))
            .collect::<Result<_, _>>()?;
        if requests != want.as_slice() {
            return Err(format!("HTTP requests {requests:?}, expected {want:?}"));
        }
    }
    if expect.exit != 0 {
        return Ok(());
    }
    // Every difference of the result is collected (the first is the one reported on the
    // case's line; all are in the failure's details).
    let mut differences = Vec::new();
    let needs_config = !expect.config.is_empty()
        || !expect.config_contains.is_empty()
        || !expect.config_absent.is_empty()
        || !expect.config_time.is_empty()
        || !expect.history.is_empty()
        || expect.base.is_some();
    if needs_config {
        let config = built.image.config()?;
        let base_config = match &expect.base {
            Some(name) => Some(
                Image {
                    reference: normalize(name),
                    ..built.image.clone()
                }
                .config()?,
            ),
            None => None,
        };
        let count = |config: &serde_json::Value, key: &str| {
            config
                .pointer(key)
                .and_then(|v| v.as_array())
                .map_or(0, Vec::len)
        };
        let base_history = base_config.as_ref().map(|base| count(base, "/history"));
        if let (Some(base), Some(added)) = (&base_config, expect.layers_added) {
            let got = count(&config, "/rootfs/diff_ids") - count(base, "/rootfs/diff_ids");
            if got != added {
                differences.push(format!(
                    "{got} layers added to the base's, expected {added}"
                ));
            }
        }
        differences.extend(
            judge::check_config(
                &config,
                &expect.config,
                &expect.config_contains,
                &expect.config_absent,
                vars,
            )
            .err(),
        );
        differences
            .extend(judge::check_history(&config, &expect.history, base_history, vars).err());
        differences.extend(judge::check_times(&config, &expect.config_time).err());
    }
    if let Some(layers) = expect.layers {
        let inspect = built.image.inspect()?;
        let got = inspect["Layers"].as_array().map_or(0, Vec::len);
        if got != layers {
            differences.push(format!("{got} layers, expected {layers}"));
        }
    }
    if let Some(other) = expect.same_digest_as {
        let (mine, theirs) = (runs.digest(index)?, runs.digest(other)?);
        if mine != theirs {
            differences.push(format!("image digest {mine}, build {other} gave {theirs}"));
        }
    }
    if let Some(other) = expect.other_digest_than {
        let (mine, theirs) = (runs.digest(index)?, runs.digest(other)?);
        if mine == theirs {
            differences.push(format!("image digest {mine} is build {other}'s"));
        }
    }
    if !expect.file.is_empty() || !expect.check.is_empty() {
        let rootfs = runs.rootfs(index)?;
        for file in &expect.file {
            differences.extend(
                judge::check_file(&rootfs, file, vars, &mut |other| runs.rootfs(other)).err(),
            );
        }
        for script in &expect.check {
            let script = substitute(script, vars)?;
            let output = Command::new("sh")
                .args(["-euc", &script])
                .env("ROOTFS", &rootfs)
                .env("CONTEXT", runs.dir.join("ctx"))
                .output()
                .map_err(|e| format!("check: {e}"))?;
            if !output.status.success() {
                differences.push(format!(
                    "check {script:?} failed: {}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
        }
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(differences.join("; also: "))
    }
}

/// The part of a build's stderr that says what went wrong: from its first `error:` line
/// (else its last lines), without the check warnings.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter(|line| !line.starts_with("WARNING: ") && !line.starts_with("  fix: "))
        .collect();
    let start = lines
        .iter()
        .position(|line| line.contains("error:"))
        .unwrap_or(lines.len().saturating_sub(6));
    lines[start..].join(" | ")
}

fn build_once(
    folder: &Folder,
    build: &Build,
    index: usize,
    platform: &str,
    ctx: &Path,
    dir: &Path,
    vars: &BTreeMap<String, String>,
) -> Result<Built, String> {
    let mut command = crate::util::xbuild(dir);
    command.args(["build", "--progress", "plain", "--platform", platform]);
    let tag = build
        .tag
        .clone()
        .unwrap_or_else(|| format!("conformance-result:b{index}"));
    command.args(["-t", &tag]);
    let dockerfile_name = build
        .dockerfile_name
        .clone()
        .unwrap_or_else(|| "Dockerfile".to_owned());
    let writes_dockerfile = build.context_url.is_none() || build.dockerfile_outside;
    if writes_dockerfile {
        let source = folder
            .dir
            .join(build.dockerfile.as_deref().unwrap_or("Dockerfile"));
        let text =
            std::fs::read_to_string(&source).map_err(|e| format!("{}: {e}", source.display()))?;
        let text = substitute(&text, vars)?;
        let path = if build.dockerfile_outside {
            let outside = dir.join(format!("dockerfile-{index}"));
            std::fs::create_dir_all(&outside).map_err(|e| e.to_string())?;
            outside.join(&dockerfile_name)
        } else {
            ctx.join(&dockerfile_name)
        };
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        if build.dockerfile_outside {
            command.arg("-f").arg(&path);
        }
    }
    if let Some(file) = &build.file {
        command.arg("-f").arg(ctx.join(file));
    }
    for (key, value) in &build.args {
        command
            .arg("--build-arg")
            .arg(format!("{key}={}", substitute(value, vars)?));
    }
    if let Some(target) = &build.target {
        command.args(["--target", target]);
    }
    for (number, secret) in build.secret.iter().enumerate() {
        let value = substitute(secret.value.as_deref().unwrap_or(""), vars)?;
        if let Some(variable) = &secret.env {
            command.env(variable, value);
            command
                .arg("--secret")
                .arg(format!("id={},env={variable}", secret.id));
        } else {
            let path = dir.join(format!("secret-{index}-{number}"));
            std::fs::write(&path, value).map_err(|e| e.to_string())?;
            command
                .arg("--secret")
                .arg(format!("id={},src={}", secret.id, path.display()));
        }
    }
    let _agent = if build.ssh.is_empty() {
        None
    } else {
        let agent = Agent::start(dir)?;
        command.env("SSH_AUTH_SOCK", &agent.socket);
        for value in &build.ssh {
            command.arg("--ssh").arg(value);
        }
        Some(agent)
    };
    for value in &build.allow {
        command.args(["--allow", value]);
    }
    if let Some(network) = &build.network {
        command.args(["--network", network]);
    }
    if build.no_cache {
        command.arg("--no-cache");
    }
    for flag in &build.flags {
        command.arg(substitute(flag, vars)?);
    }
    for (key, value) in &build.env {
        command.env(key, substitute(value, vars)?);
    }
    match &build.context_url {
        Some(url) => command.arg(substitute(url, vars)?),
        None => command.arg(ctx),
    };
    let (code, stderr) = run_with_timeout(&mut command, dir, index)?;
    Ok(Built {
        code,
        stderr,
        image: Image {
            store: dir.join("store"),
            reference: normalize(&tag),
            arch: platform.split('/').nth(1).unwrap_or("amd64").to_owned(),
        },
        dockerfile_name,
    })
}

/// An ssh-agent holding a fresh ed25519 key, for `--ssh default`; killed on drop.
struct Agent {
    pid: i32,
    socket: PathBuf,
}

impl Agent {
    fn start(dir: &Path) -> Result<Self, String> {
        let socket = dir.join("agent.sock");
        let output = Command::new("ssh-agent")
            .arg("-a")
            .arg(&socket)
            .output()
            .map_err(|e| format!("ssh-agent: {e}"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let pid = text
            .split("SSH_AGENT_PID=")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .and_then(|pid| pid.parse::<i32>().ok())
            .filter(|pid| *pid > 1)
            .ok_or_else(|| format!("ssh-agent printed {text:?}"))?;
        let agent = Self { pid, socket };
        let key = dir.join("agent-key");
        sh(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key))?;
        sh(Command::new("ssh-add")
            .arg("-q")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &agent.socket))?;
        Ok(agent)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// Runs a build with its output in files (no pipe to fill), killing it after
/// [`BUILD_TIMEOUT`]. Returns the exit code (-1 when killed by a signal) and stderr.
fn run_with_timeout(
    command: &mut Command,
    dir: &Path,
    index: usize,
) -> Result<(i32, String), String> {
    let out = dir.join(format!("build-{index}.stdout"));
    let err = dir.join(format!("build-{index}.stderr"));
    command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).map_err(|e| e.to_string())?)
        .stderr(std::fs::File::create(&err).map_err(|e| e.to_string())?);
    let mut child = command.spawn().map_err(|e| format!("xbuild: {e}"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > BUILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "xbuild build did not finish in {} s",
                BUILD_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    Ok((status.code().unwrap_or(-1), stderr))
}

/// The name a tag gets in the store (`x` is `docker.io/library/x:latest`).
pub(crate) fn normalize(tag: &str) -> String {
    let (name, tag) = match tag.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_owned(), tag.to_owned()),
        _ => (tag.to_owned(), "latest".to_owned()),
    };
    let first = name.split('/').next().unwrap_or("");
    let name = if !name.contains('/') {
        format!("docker.io/library/{name}")
    } else if first.contains('.') || first.contains(':') || first == "localhost" {
        name
    } else {
        format!("docker.io/{name}")
    };
    format!("{name}:{tag}")
}

/// `TARGETPLATFORM` and friends for the expectations.
fn builtin_vars(platform: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for (prefix, value) in [("TARGET", platform), ("BUILD", BUILD_PLATFORM)] {
        let mut parts = value.split('/');
        let os = parts.next().unwrap_or("").to_owned();
        let arch = parts.next().unwrap_or("").to_owned();
        let variant = parts.next().unwrap_or("").to_owned();
        vars.insert(format!("{prefix}PLATFORM"), value.to_owned());
        vars.insert(format!("{prefix}OS"), os);
        vars.insert(format!("{prefix}ARCH"), arch);
        vars.insert(format!("{prefix}VARIANT"), variant);
    }
    let uname = match platform {
        "linux/arm64" => "aarch64",
        "linux/amd64" => "x86_64",
        other => other,
    };
    vars.insert("UNAME_M".to_owned(), uname.to_owned());
    vars
}

/// Git with a fixed identity and fixed dates, so the scripts' commits are reproducible.
fn git_env(command: &mut Command) -> &mut Command {
    command
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        // Submodules from the loopback server over plain HTTP.
        .env("GIT_ALLOW_PROTOCOL", "file:http:https:git")
}

fn sh(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A store for this run: hard links to the seed's blobs, its own `index.json`.
fn copy_store(seed: &Path, store: &Path) -> Result<(), String> {
    sh(Command::new("cp").arg("-al").arg(seed).arg(store))?;
    let index = store.join("index.json");
    let text = std::fs::read(&index).map_err(|e| e.to_string())?;
    std::fs::remove_file(&index).map_err(|e| e.to_string())?;
    std::fs::write(&index, text).map_err(|e| e.to_string())
}

fn mode_of(text: Option<&str>, default: u32) -> Result<u32, String> {
    text.map_or(Ok(default), |text| {
        u32::from_str_radix(text, 8).map_err(|_| format!("bad octal mode {text:?}"))
    })
}

/// Makes one entry in the context (or removes what is there, for `absent`).
fn make_entry(ctx: &Path, entry: &Entry, folder: &Folder) -> Result<(), String> {
    let path = ctx.join(&entry.path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    if std::fs::symlink_metadata(&path).is_ok() {
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path).map_err(|e| e.to_string())?;
        } else {
            std::fs::remove_file(&path).map_err(|e| e.to_string())?;
        }
    }
    let context = || format!("{}: context entry {}", folder.id, entry.path);
    match entry.kind {
        EntryKind::Absent => return Ok(()),
        EntryKind::File => {
            std::fs::write(&path, entry.content.as_deref().unwrap_or(""))
                .map_err(|e| format!("{}: {e}", context()))?;
            let mode = mode_of(entry.mode.as_deref(), 0o644)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| e.to_string())?;
        }
        EntryKind::Dir => {
            std::fs::create_dir(&path).map_err(|e| format!("{}: {e}", context()))?;
            let mode = mode_of(entry.mode.as_deref(), 0o755)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| e.to_string())?;
        }
        EntryKind::Symlink => {
            let target = entry
                .target
                .as_deref()
                .ok_or_else(|| format!("{}: symlink without target", context()))?;
            std::os::unix::fs::symlink(target, &path).map_err(|e| format!("{}: {e}", context()))?;
        }
        EntryKind::Hardlink => {
            let target = entry
                .target
                .as_deref()
                .ok_or_else(|| format!("{}: hardlink without target", context()))?;
            std::fs::hard_link(ctx.join(target), &path)
                .map_err(|e| format!("{}: {e}", context()))?;
        }
        EntryKind::Fifo => {
            let mode = mode_of(entry.mode.as_deref(), 0o644)?;
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(mode))
                .map_err(|e| format!("{}: {e}", context()))?;
        }
        EntryKind::Socket => {
            let listener = std::os::unix::net::UnixListener::bind(&path)
                .map_err(|e| format!("{}: {e}", context()))?;
            drop(listener);
            if let Some(mode) = &entry.mode {
                std::fs::set_permissions(
                    &path,
                    std::fs::Permissions::from_mode(mode_of(Some(mode), 0)?),
                )
                .map_err(|e| e.to_string())?;
            }
        }
        EntryKind::Tar => {
            let bytes = tar_bytes(&entry.member, entry.gzip)?;
            std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", context()))?;
            let mode = mode_of(entry.mode.as_deref(), 0o644)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| e.to_string())?;
        }
    }
    if let Some(mtime) = entry.mtime {
        let time = nix::sys::time::TimeSpec::new(mtime, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &path,
            &time,
            &time,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| format!("{}: {e}", context()))?;
    }
    Ok(())
}

/// A tar archive of the members, in order (gzip-compressed when asked).
fn tar_bytes(members: &[TarMember], gzip: bool) -> Result<Vec<u8>, String> {
    let mut builder = tar::Builder::new(Vec::new());
    for member in members {
        let mut header = tar::Header::new_ustar();
        let content = member.content.as_deref().unwrap_or("").as_bytes();
        let (kind, default_mode, size) = match member.kind {
            EntryKind::File => (tar::EntryType::Regular, 0o644, content.len()),
            EntryKind::Dir => (tar::EntryType::Directory, 0o755, 0),
            EntryKind::Symlink => (tar::EntryType::Symlink, 0o777, 0),
            EntryKind::Hardlink => (tar::EntryType::Link, 0o644, 0),
            other => return Err(format!("tar member {}: kind {other:?}", member.name)),
        };
        header.set_entry_type(kind);
        header.set_mode(mode_of(member.mode.as_deref(), default_mode)?);
        header.set_size(size as u64);
        header.set_uid(member.uid.unwrap_or(0));
        header.set_gid(member.gid.unwrap_or(0));
        header.set_mtime(member.mtime.unwrap_or(1_700_000_000));
        header
            .set_path(&member.name)
            .map_err(|e| format!("tar member {}: {e}", member.name))?;
        if let Some(target) = &member.target {
            header
                .set_link_name(target)
                .map_err(|e| format!("tar member {}: {e}", member.name))?;
        }
        header.set_cksum();
        builder
            .append(&header, content)
            .map_err(|e| format!("tar member {}: {e}", member.name))?;
    }
    let bytes = builder.into_inner().map_err(|e| e.to_string())?;
    if !gzip {
        return Ok(bytes);
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&bytes).map_err(|e| e.to_string())?;
    encoder.finish().map_err(|e| e.to_string())
}

fn served_file(file: &ServedFile, folder: &Folder) -> Result<Fixed, String> {
    let body = if let Some(content) = &file.content {
        content.as_bytes().to_vec()
    } else if let Some(from) = &file.from {
        std::fs::read(folder.dir.join(from)).map_err(|e| format!("{}: {from}: {e}", folder.id))?
    } else {
        tar_bytes(&file.member, file.gzip)?
    };
    Ok(Fixed {
        body,
        last_modified: file.last_modified.clone(),
        etag: file.etag.clone(),
        content_disposition: file.content_disposition.clone(),
    })
}

#[test]
fn tags_are_named_as_the_store_names_them() {
    assert_eq!(normalize("base"), "docker.io/library/base:latest");
    assert_eq!(
        normalize("conformance-result:b1"),
        "docker.io/library/conformance-result:b1"
    );
    assert_eq!(normalize("me/app:1"), "docker.io/me/app:1");
    assert_eq!(normalize("localhost:5000/app"), "localhost:5000/app:latest");
}

/// The git set-up the cases rely on works: a script's repository, served by the loopback
/// server, clones with the `git` program over dumb HTTP, at the tag's fixed-date commit.
#[test]
fn served_git_repositories_clone_over_http() {
    if !crate::util::require(&[crate::util::Need::Program("git")]) {
        return;
    }
    let temp = crate::util::temp_dir();
    let served = temp.path().join("serve");
    std::fs::create_dir(&served).unwrap();
    let site = SiteHandle::new(&served, HashMap::new());
    let script = "mkdir repo && cd repo && git init -q && echo one >foo && git add foo \
                  && git commit -qm one && git tag v1 && git update-server-info";
    let output = git_env(Command::new("sh").args(["-euc", script]))
        .current_dir(&served)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let clone = temp.path().join("clone");
    let output = git_env(Command::new("git").args(["clone", "-q", "--branch", "v1"]))
        .arg(format!("{}/repo/.git", site.url()))
        .arg(&clone)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read_to_string(clone.join("foo")).unwrap(), "one\n");
    assert!(
        site.take_log()
            .iter()
            .any(|line| line.starts_with("GET /repo/.git/info/refs"))
    );
}
