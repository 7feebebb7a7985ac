//! Registry credentials and the authentication handshake.
//!
//! - Credentials come from Docker's client configuration, `$DOCKER_CONFIG/config.json`
//!   (default `~/.docker/config.json`): `credHelpers.<registry>` names a helper for one
//!   registry, `credsStore` a helper for all, and `auths.<registry>` holds `auth`
//!   (base64 `user:password`) or an `identitytoken`. Helpers are the programs
//!   `docker-credential-<name>` speaking the docker-credential-helpers protocol
//!   (`get`/`store`/`erase`, JSON on stdin/stdout). Credentials forwarded to the process
//!   ([`forward_credentials`]: a build node's sub-build, given the client's) come first.
//! - A registry answers `401` with a `WWW-Authenticate` challenge: `Basic` (send the
//!   credentials on every request) or `Bearer realm=...,service=...,scope=...` (fetch a token
//!   from the realm for the scopes we need: `pull` for bases, `pull,push` for targets).
//!   An identity token (user `<token>`) is exchanged with the OAuth2 `refresh_token` grant,
//!   which oci-client does not implement.
//!
//! A password or token is a [`Secret`]: it has no `Display`, its `Debug` is redacted, and it
//! never goes into an error message.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

use crate::env;

/// The key Docker uses for Docker Hub in `config.json` and with credential helpers.
const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

/// A password or token. Never displayed; `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A user name and its password, or (user `<token>`) an identity token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name; `<token>` marks an identity (refresh) token.
    pub username: String,
    /// The password or token.
    pub secret: Secret,
}

impl Credentials {
    /// Whether the secret is an OAuth2 refresh token rather than a password.
    pub fn is_identity_token(&self) -> bool {
        self.username == "<token>"
    }

    /// The `Authorization: Basic` value.
    pub(crate) fn basic_header(&self) -> String {
        let pair = format!("{}:{}", self.username, self.secret.expose());
        format!("Basic {}", BASE64.encode(pair))
    }
}

/// Credentials given to this process for its lifetime, by registry (a build node's
/// sub-build gets the client's this way: in memory only, never in a file of the node).
static FORWARDED: std::sync::OnceLock<BTreeMap<String, Credentials>> = std::sync::OnceLock::new();

/// Makes `credentials` (by registry, as users name it) the ones this process uses for
/// those registries, before any configuration file or helper. Set once: a later call is
/// ignored and returns `false`.
pub fn forward_credentials(credentials: BTreeMap<String, Credentials>) -> bool {
    FORWARDED.set(credentials).is_ok()
}

fn forwarded(registry: &str) -> Option<Credentials> {
    let key = config_key(registry);
    FORWARDED
        .get()?
        .iter()
        .find(|(name, _)| config_key(name) == key)
        .map(|(_, credentials)| credentials.clone())
}

/// Errors reading or writing credentials.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `config.json` could not be read or written.
    #[error("{action} {path}")]
    ConfigFile {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not valid JSON, or an entry is malformed.
    #[error("{path} is not a valid Docker client configuration: {reason}")]
    BadConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong (never includes a secret).
        reason: String,
    },
    /// A credential helper failed.
    #[error("credential helper docker-credential-{helper} {action} failed: {message}")]
    Helper {
        /// The helper's name.
        helper: String,
        /// `get`, `store` or `erase`.
        action: &'static str,
        /// What it said (its output on failure, which carries no secret) or why it
        /// could not run.
        message: String,
    },
}

/// Where credentials were stored by [`DockerConfig::store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredIn {
    /// In the credential helper `docker-credential-<name>`.
    Helper(String),
    /// In `config.json`, base64-encoded only.
    ConfigFile(PathBuf),
}

/// Docker's client configuration file, `config.json`.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
}

impl DockerConfig {
    /// The configuration at `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`
    /// (whether or not it exists yet).
    pub fn from_env() -> Self {
        let dir = std::env::var_os(env::DOCKER_CONFIG)
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os(env::HOME)
                    .map_or_else(|| PathBuf::from("."), PathBuf::from)
                    .join(".docker")
            });
        Self::at(dir.join("config.json"))
    }

    /// The configuration in a given file.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<serde_json::Map<String, serde_json::Value>, AuthError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(serde_json::Map::new());
            }
            Err(source) => {
                return Err(AuthError::ConfigFile {
                    action: "reading",
                    path: self.path.clone(),
                    source,
                });
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Map::new());
        }
        // The error of serde_json names a position, never the content.
        serde_json::from_slice(&bytes).map_err(|error| AuthError::BadConfig {
            path: self.path.clone(),
            reason: error.to_string(),
        })
    }

    fn write(&self, config: &serde_json::Map<String, serde_json::Value>) -> Result<(), AuthError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file_error = |action| {
            let path = self.path.clone();
            move |source| AuthError::ConfigFile {
                action,
                path,
                source,
            }
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        if !dir.is_dir() {
            // Private, as Docker makes `~/.docker`.
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(file_error("creating the directory of"))?;
        }
        let bytes = serde_json::to_vec_pretty(config).expect("a JSON map serialises");
        // Written as a 0600 temporary file then renamed, so the file is never readable by
        // others and never half-written.
        let tmp = dir.join(format!(".config.json.{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(file_error("writing"))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(file_error("writing"))?;
        std::fs::rename(&tmp, &self.path).map_err(file_error("replacing"))
    }

    /// The helper configured for `registry`: `credHelpers.<registry>`, else `credsStore`.
    ///
    /// # Errors
    /// The file cannot be read or parsed.
    pub fn helper_for(&self, registry: &str) -> Result<Option<String>, AuthError> {
        let config = self.read()?;
        let key = config_key(registry);
        let specific = config
            .get("credHelpers")
            .and_then(|helpers| helpers.as_object())
            .and_then(|helpers| helpers.get(registry).or_else(|| helpers.get(&key)))
            .and_then(|helper| helper.as_str());
        let global = config.get("credsStore").and_then(|store| store.as_str());
        Ok(specific
            .or(global)
            .filter(|name| !name.is_empty())
            .map(str::to_owned))
    }

    /// The credentials for `registry` (as users name it: `docker.io`, `host:port`), if any.
    ///
    /// # Errors
    /// The file is unreadable or malformed, or the helper fails (other than "not found").
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>, AuthError> {
        if let Some(credentials) = forwarded(registry) {
            return Ok(Some(credentials));
        }
        if let Some(helper) = self.helper_for(registry)? {
            return helper_get(&helper, &config_key(registry));
        }
        let config = self.read()?;
        let Some(entry) = config
            .get("auths")
            .and_then(|auths| auths.as_object())
            .and_then(|auths| find_auth_entry(auths, registry))
        else {
            return Ok(None);
        };
        let entry: AuthEntry =
            serde_json::from_value(entry.clone()).map_err(|error| AuthError::BadConfig {
                path: self.path.clone(),
                reason: format!("auths entry for {registry}: {error}"),
            })?;
        if let Some(token) = entry.identitytoken.filter(|token| !token.is_empty()) {
            return Ok(Some(Credentials {
                username: "<token>".to_owned(),
                secret: Secret::new(token),
            }));
        }
        if let Some(auth) = entry.auth.filter(|auth| !auth.is_empty()) {
            let bad = || AuthError::BadConfig {
                path: self.path.clone(),
                reason: format!("auths entry for {registry}: `auth` is not base64 user:password"),
            };
            let decoded = BASE64.decode(auth.trim()).map_err(|_| bad())?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
            let (username, password) = decoded.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Credentials {
                username: username.to_owned(),
                secret: Secret::new(password),
            }));
        }
        match (entry.username, entry.password) {
            (Some(username), Some(password)) => Ok(Some(Credentials {
                username,
                secret: Secret::new(password),
            })),
            _ => Ok(None),
        }
    }

    /// Stores credentials for `registry`: in its helper if one is configured, else in
    /// `config.json` (mode 0600, base64 only: the caller warns).
    ///
    /// # Errors
    /// The helper fails or the file cannot be written.
    pub fn store(&self, registry: &str, credentials: &Credentials) -> Result<StoredIn, AuthError> {
        let key = config_key(registry);
        if let Some(helper) = self.helper_for(registry)? {
            helper_store(&helper, &key, credentials)?;
            return Ok(StoredIn::Helper(helper));
        }
        let mut config = self.read()?;
        let auths = config
            .entry("auths")
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        let Some(auths) = auths.as_object_mut() else {
            return Err(AuthError::BadConfig {
                path: self.path.clone(),
                reason: "`auths` is not an object".to_owned(),
            });
        };
        let pair = format!("{}:{}", credentials.username, credentials.secret.expose());
        auths.insert(key, serde_json::json!({ "auth": BASE64.encode(pair) }));
        self.write(&config)?;
        Ok(StoredIn::ConfigFile(self.path.clone()))
    }

    /// Removes the credentials for `registry`. Returns whether there were any.
    ///
    /// # Errors
    /// The helper fails or the file cannot be written.
    pub fn erase(&self, registry: &str) -> Result<bool, AuthError> {
        let key = config_key(registry);
        let mut erased = false;
        if let Some(helper) = self.helper_for(registry)? {
            erased |= helper_erase(&helper, &key)?;
        }
        let mut config = self.read()?;
        if let Some(auths) = config.get_mut("auths").and_then(|a| a.as_object_mut()) {
            let keys: Vec<String> = auths
                .keys()
                .filter(|candidate| normalise_key(candidate) == normalise_key(&key))
                .cloned()
                .collect();
            for candidate in keys {
                auths.remove(&candidate);
                erased = true;
            }
            if erased {
                self.write(&config)?;
            }
        }
        Ok(erased)
    }
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// The key for a registry in `config.json` and helpers: Docker Hub's legacy URL, else the
/// host.
pub fn config_key(registry: &str) -> String {
    if matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        DOCKER_HUB_CONFIG_KEY.to_owned()
    } else {
        registry.to_owned()
    }
}

/// `https://host/v1/` → `host`, as Docker matches `auths` keys.
fn normalise_key(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

fn find_auth_entry<'a>(
    auths: &'a serde_json::Map<String, serde_json::Value>,
    registry: &str,
) -> Option<&'a serde_json::Value> {
    let wanted = config_key(registry);
    auths.get(&wanted).or_else(|| {
        auths
            .iter()
            .find(|(key, _)| normalise_key(key) == normalise_key(&wanted))
            .map(|(_, value)| value)
    })
}

fn run_helper(
    helper: &str,
    action: &'static str,
    input: &[u8],
) -> Result<std::process::Output, AuthError> {
    let failed = |message: String| AuthError::Helper {
        helper: helper.to_owned(),
        action,
        message,
    };
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| failed(format!("cannot run {program}: {error}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|error| failed(format!("writing to {program}: {error}")))?;
    }
    child
        .wait_with_output()
        .map_err(|error| failed(format!("waiting for {program}: {error}")))
}

/// The helper's complaint, for an error message. Only used when it failed, when its
/// output carries no credentials.
fn helper_message(output: &std::process::Output) -> String {
    let text = if output.stdout.is_empty() {
        &output.stderr
    } else {
        &output.stdout
    };
    let text = String::from_utf8_lossy(text).trim().to_owned();
    if text.is_empty() {
        format!("exit status {}", output.status)
    } else {
        text
    }
}

fn helper_get(helper: &str, server: &str) -> Result<Option<Credentials>, AuthError> {
    let output = run_helper(helper, "get", server.as_bytes())?;
    if !output.status.success() {
        let message = helper_message(&output);
        if message.contains("credentials not found") {
            return Ok(None);
        }
        return Err(AuthError::Helper {
            helper: helper.to_owned(),
            action: "get",
            message,
        });
    }
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    // The answer holds the secret: on a parse error say only that it was not JSON.
    let answer: Answer = serde_json::from_slice(&output.stdout).map_err(|_| AuthError::Helper {
        helper: helper.to_owned(),
        action: "get",
        message: "its answer is not the expected JSON".to_owned(),
    })?;
    Ok(Some(Credentials {
        username: answer.username,
        secret: Secret::new(answer.secret),
    }))
}

fn helper_store(helper: &str, server: &str, credentials: &Credentials) -> Result<(), AuthError> {
    let input = serde_json::json!({
        "ServerURL": server,
        "Username": credentials.username,
        "Secret": credentials.secret.expose(),
    });
    let output = run_helper(helper, "store", input.to_string().as_bytes())?;
    if output.status.success() {
        Ok(())
    } else {
        // A helper that echoes its input back would show the secret: blank it out.
        let message = helper_message(&output).replace(credentials.secret.expose(), "<redacted>");
        Err(AuthError::Helper {
            helper: helper.to_owned(),
            action: "store",
            message,
        })
    }
}

fn helper_erase(helper: &str, server: &str) -> Result<bool, AuthError> {
    let output = run_helper(helper, "erase", server.as_bytes())?;
    if output.status.success() {
        return Ok(true);
    }
    let message = helper_message(&output);
    if message.contains("credentials not found") {
        return Ok(false);
    }
    Err(AuthError::Helper {
        helper: helper.to_owned(),
        action: "erase",
        message,
    })
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer` (lower-cased).
    pub scheme: String,
    /// The parameters (`realm`, `service`, `scope`), names lower-cased.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// Parses a `WWW-Authenticate` header value: `Scheme k="v", k2=v2`.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.is_empty() {
            return None;
        }
        let mut params = BTreeMap::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let name: String = chars
                .by_ref()
                .take_while(|c| *c != '=')
                .collect::<String>()
                .trim()
                .to_ascii_lowercase();
            if name.is_empty() {
                break;
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.peek().copied() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_owned();
            }
            params.insert(name, value);
        }
        Some(Self {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }

    /// The `realm` parameter.
    pub fn realm(&self) -> Option<&str> {
        self.params.get("realm").map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_parses() {
        let challenge = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#,
        )
        .unwrap();
        assert_eq!(challenge.scheme, "bearer");
        assert_eq!(challenge.realm(), Some("https://auth.docker.io/token"));
        assert_eq!(challenge.params["service"], "registry.docker.io");
        assert_eq!(
            challenge.params["scope"],
            "repository:library/alpine:pull,push"
        );
        let basic = Challenge::parse(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(basic.scheme, "basic");
        assert_eq!(basic.realm(), Some("Registry Realm"));
        let bare = Challenge::parse("Basic").unwrap();
        assert!(bare.params.is_empty());
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let credentials = Credentials {
            username: "me".to_owned(),
            secret: Secret::new("hunter2"),
        };
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }

    #[test]
    fn config_file_round_trip_keeps_other_keys_and_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"other.io":{"auth":"eDp5"}},"psFormat":"x"}"#,
        )
        .unwrap();
        let config = DockerConfig::at(&path);
        let credentials = Credentials {
            username: "me".to_owned(),
            secret: Secret::new("pa:ss"),
        };
        assert_eq!(
            config.store("127.0.0.1:5000", &credentials).unwrap(),
            StoredIn::ConfigFile(path.clone())
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            config.credentials("127.0.0.1:5000").unwrap(),
            Some(credentials)
        );
        assert_eq!(
            config.credentials("other.io").unwrap().unwrap().username,
            "x"
        );
        assert_eq!(config.credentials("none.io").unwrap(), None);
        assert!(config.erase("127.0.0.1:5000").unwrap());
        assert_eq!(config.credentials("127.0.0.1:5000").unwrap(), None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("psFormat") && text.contains("other.io"),
            "{text}"
        );
    }

    #[test]
    fn registry_helpers_win_over_the_store_helper() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"credsStore":"desktop","credHelpers":{"ghcr.io":"gh","https://index.docker.io/v1/":"hub"}}"#,
        )
        .unwrap();
        let config = DockerConfig::at(&path);
        assert_eq!(config.helper_for("ghcr.io").unwrap().as_deref(), Some("gh"));
        assert_eq!(
            config.helper_for("docker.io").unwrap().as_deref(),
            Some("hub")
        );
        assert_eq!(
            config.helper_for("other.io").unwrap().as_deref(),
            Some("desktop")
        );
        assert_eq!(
            DockerConfig::at(dir.path().join("none.json"))
                .helper_for("x")
                .unwrap(),
            None
        );
    }

    #[test]
    fn malformed_config_is_an_error_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"auths":{"r.io":{"auth":"c2VjcmV0LXZhbHVl"}}"#).unwrap();
        let error = DockerConfig::at(&path).credentials("r.io").unwrap_err();
        assert!(!error.to_string().contains("c2VjcmV0"), "{error}");
        std::fs::write(&path, r#"{"auths":{"r.io":{"auth":"bm9jb2xvbg=="}}}"#).unwrap();
        let error = DockerConfig::at(&path).credentials("r.io").unwrap_err();
        assert!(
            error.to_string().contains("not base64 user:password"),
            "{error}"
        );
    }

    #[test]
    fn docker_hub_uses_the_legacy_key_and_urls_match_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = BASE64.encode("u:p");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"https://reg.example:5000/v2/":{{"auth":"{auth}"}},"tok.io":{{"identitytoken":"rt"}}}}}}"#
            ),
        )
        .unwrap();
        let config = DockerConfig::at(&path);
        assert_eq!(
            config.credentials("docker.io").unwrap().unwrap().username,
            "u"
        );
        assert_eq!(
            config
                .credentials("reg.example:5000")
                .unwrap()
                .unwrap()
                .username,
            "u"
        );
        assert!(
            config
                .credentials("tok.io")
                .unwrap()
                .unwrap()
                .is_identity_token()
        );
    }
}
