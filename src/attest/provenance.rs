//! SLSA provenance predicates, v1 (`https://slsa.dev/provenance/v1`) and v0.2
//! (`https://slsa.dev/provenance/v0.2`, as BuildKit wrote it before v1), from a plain
//! [`BuildRecord`] the build pipeline fills.
//!
//! The build type is xbuild's own, [`BUILD_TYPE`], not BuildKit's: BuildKit's build types
//! promise an LLB definition in `buildConfig` and BuildKit's extension fields in the run
//! metadata, which xbuild does not have. What a consumer of BuildKit's provenance reads
//! keeps BuildKit's shape: `externalParameters.configSource` (`path`, and `uri`/`digest`
//! for a git checkout), `externalParameters.request` (`frontend: dockerfile.v0`, `args`
//! with the `build-arg:`/`label:` prefixes and `target`, `locals`, and with `mode=max`
//! `secrets` and `ssh` by id), `internalParameters.builderPlatform`, and base images in
//! `resolvedDependencies` as `pkg:docker/NAME@TAG?platform=...` with their digests.
//!
//! The v1 predicate stays inside the SLSA v1 schema, so parsers that reject unknown fields
//! (the in-toto-attestation protobuf definitions) accept it: `runDetails.metadata` holds
//! only `invocationId`, `startedOn` and `finishedOn`, and what BuildKit puts in its
//! `buildkit_*` metadata fields (completeness, hermeticity, reproducibility, the
//! Dockerfile's source) goes into `internalParameters` here. The v0.2 predicate has them
//! where BuildKit's v0.2 had them (`metadata.completeness`, `metadata.reproducible`, the
//! `BUILD_TYPE#metadata` and `BUILD_TYPE#hermetic` extension fields).
//!
//! Secrets: the record carries secret and ssh ids only, never values, and they appear only
//! with `mode=max`. A build argument whose name looks like a secret (BuildKit's
//! `SecretsUsedInArgOrEnv` words: `key`, `token`, `password`, ...) has its value replaced by
//! [`REDACTED`], is listed in `request.redacted` with the reason, and its value is also
//! removed from the per-step details. With `mode=min` (the default), build arguments and
//! labels are left out altogether, as BuildKit does.
//!
//! Deterministic with `SOURCE_DATE_EPOCH`: times are clamped to it and
//! [`invocation_id`] derives the id from the request.
//!
//! Specs: <https://slsa.dev/spec/v1.0/provenance>, <https://slsa.dev/spec/v0.2/provenance>,
//! BuildKit's <https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md>.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Statement, StatementVersion, Subject, image_purl};

/// xbuild's build type: a Dockerfile built by xbuild, described in README.md
/// ("Attestations").
pub const BUILD_TYPE: &str = "https://xbuild.dev/provenance/dockerfile/v1";
/// The builder id used when the pipeline has none better (a CI run URL is better).
pub const DEFAULT_BUILDER_ID: &str = "https://xbuild.dev/builder/local";
/// What a redacted build argument's value becomes.
pub const REDACTED: &str = "<redacted>";
/// Why a build argument was redacted.
const REDACTED_REASON: &str = "the name looks like a secret (BuildKit's SecretsUsedInArgOrEnv words); pass secrets with --secret, which never appear here";

/// How much the provenance tells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// BuildKit's `mode=min` (the default): no build arguments, labels, secrets or steps.
    #[default]
    Min,
    /// `mode=max`: build arguments (secret-looking ones redacted), secret and ssh ids, the
    /// Dockerfile's content and per-step details.
    Max,
}

/// Which SLSA provenance version to write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlsaVersion {
    /// `https://slsa.dev/provenance/v1` (the default here).
    #[default]
    #[serde(rename = "v1")]
    V1,
    /// `https://slsa.dev/provenance/v0.2`.
    #[serde(rename = "v0.2")]
    V02,
}

impl SlsaVersion {
    /// The predicate type URI.
    pub fn predicate_type(self) -> &'static str {
        match self {
            Self::V1 => super::SLSA_V1_PREDICATE,
            Self::V02 => super::SLSA_V02_PREDICATE,
        }
    }
}

/// A base image the build used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseImage {
    /// The reference as the Dockerfile names it after expansion (`debian:bookworm`).
    pub reference: String,
    /// The platform it was resolved for (`linux/arm64`).
    pub platform: String,
    /// The digest it resolved to (the platform's manifest, `sha256:...`).
    pub digest: String,
    /// Whether it came from the local store rather than a registry (BuildKit writes
    /// `pkg:oci` then, `pkg:docker` otherwise).
    #[serde(default)]
    pub local: bool,
}

/// The build context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// sha256 over the context after `.dockerignore` (lower-case hex).
    pub sha256: String,
    /// The git checkout it is, when it is one with a clean tree.
    pub git: Option<GitSource>,
}

/// A git checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitSource {
    /// The remote's URL (credentials are removed here), when there is one.
    pub url: Option<String>,
    /// The commit (40 hex digits for SHA-1, 64 for SHA-256 repositories).
    pub commit: String,
}

/// A local directory given as `--build-context NAME=DIR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedContext {
    /// The context's name.
    pub name: String,
    /// sha256 over the directory after its `.dockerignore` (lower-case hex).
    pub sha256: String,
}

/// A file fetched over HTTP (`ADD https://...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpSource {
    /// The URL.
    pub url: String,
    /// sha256 of what was fetched (lower-case hex).
    pub sha256: String,
}

/// A secret or ssh forward, by id only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretId {
    /// The id.
    pub id: String,
    /// Whether the build went on without it.
    #[serde(default)]
    pub optional: bool,
}

/// One step of the build, for `mode=max`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Its id (`step0`, ...), referred to by `inputs`.
    pub id: String,
    /// The platform it ran for.
    pub platform: String,
    /// Its stage's name or index.
    pub stage: String,
    /// The instruction as run (after expansion).
    pub instruction: String,
    /// Its first and last line in the Dockerfile (1-based).
    pub lines: Option<(usize, usize)>,
    /// The ids of the steps it builds on.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Whether its result came from the cache.
    #[serde(default)]
    pub cached: bool,
    /// The diff_id of the layer it made, if any.
    pub layer: Option<String>,
}

/// Everything a provenance says, filled by the build pipeline for one platform's image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildRecord {
    /// How much to tell.
    pub mode: Mode,
    /// The Dockerfile's path as given (`-f`), relative to the context when it is inside.
    pub dockerfile_path: String,
    /// The Dockerfile's content (written with `mode=max`).
    pub dockerfile: Option<String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--build-arg` values as given.
    pub build_args: BTreeMap<String, String>,
    /// `--label` values.
    pub labels: BTreeMap<String, String>,
    /// The platforms of the whole build (`--platform`).
    pub platforms: Vec<String>,
    /// The platform of this image (the statement's subject).
    pub platform: String,
    /// The build machine's platform.
    pub builder_platform: String,
    /// Base images, in the order the build resolved them.
    pub base_images: Vec<BaseImage>,
    /// The context.
    pub context: Option<Context>,
    /// Files fetched over HTTP.
    pub http: Vec<HttpSource>,
    /// Git repositories `ADD` checked out.
    #[serde(default)]
    pub git: Vec<GitSource>,
    /// Directories given as `--build-context NAME=DIR` that the build read.
    #[serde(default)]
    pub named_contexts: Vec<NamedContext>,
    /// `--secret` ids.
    pub secrets: Vec<SecretId>,
    /// `--ssh` ids.
    pub ssh: Vec<SecretId>,
    /// Steps (`mode=max`).
    pub steps: Vec<Step>,
    /// Whether any step had network access (a `RUN` without `--network=none`).
    pub network: bool,
    /// Whether the user declared the build reproducible.
    pub reproducible: bool,
    /// The builder's id (a URI).
    pub builder_id: String,
    /// The invocation id, shared by every platform of one build (see [`invocation_id`]).
    pub invocation_id: String,
    /// When the build started (Unix seconds).
    pub started: i64,
    /// When it finished (Unix seconds).
    pub finished: i64,
    /// `SOURCE_DATE_EPOCH`, which clamps both times.
    pub source_date_epoch: Option<i64>,
}

/// An invocation id for one build: with `SOURCE_DATE_EPOCH`, derived from `request` (what
/// the build was asked to do: the same request gives the same id); otherwise random, as
/// BuildKit's: 25 characters of `[a-z0-9]`.
pub fn invocation_id(source_date_epoch: Option<i64>, request: &[u8]) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let bytes: Vec<u8> = match source_date_epoch {
        Some(epoch) => {
            use sha2::Digest as _;
            let mut hasher = sha2::Sha256::new();
            hasher.update(epoch.to_be_bytes());
            hasher.update(request);
            hasher.finalize().to_vec()
        }
        None => (0..32).map(|_| fastrand::u8(..)).collect(),
    };
    bytes
        .iter()
        .take(25)
        .map(|byte| char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]))
        .collect()
}

/// Whether a build argument's name looks like a secret's (BuildKit's rule).
pub fn is_secret_name(name: &str) -> bool {
    crate::check::buildkit::is_secret_key(name)
}

/// The parts of a record both versions share, worked out once.
struct Parts {
    config_source: Map<String, Value>,
    request: Map<String, Value>,
    dependencies: Vec<Value>,
    request_complete: bool,
    dependencies_complete: bool,
    hermetic: bool,
    source: Option<Value>,
    steps: Option<Value>,
    started: String,
    finished: String,
}

fn digest_set(hex: &str) -> Value {
    let algorithm = if hex.len() == 64 { "sha256" } else { "sha1" };
    json!({ algorithm: hex })
}

fn split_digest(digest: &str) -> Value {
    match digest.split_once(':') {
        Some((algorithm, hex)) => json!({ algorithm: hex }),
        None => json!({ "sha256": digest }),
    }
}

/// A URL without user information (`https://user:token@host/...` → `https://host/...`).
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host);
            format!("{scheme}://{host}{path}")
        }
        None => url
            .rsplit_once('@')
            .map_or(url, |(_, host)| host)
            .to_owned(),
    }
}

fn parts(record: &BuildRecord) -> Parts {
    let max = record.mode == Mode::Max;
    let mut args = Map::new();
    let mut redacted = Vec::new();
    let mut scrub: Vec<&str> = Vec::new();
    let mut request_complete = true;
    for (name, value) in &record.build_args {
        if !max {
            request_complete = false;
            continue;
        }
        let key = format!("build-arg:{name}");
        if is_secret_name(name) {
            if !value.is_empty() {
                scrub.push(value);
            }
            args.insert(key.clone(), json!(REDACTED));
            redacted.push(json!({ "arg": key, "reason": REDACTED_REASON }));
        } else {
            args.insert(key, json!(value));
        }
    }
    for (name, value) in &record.labels {
        if max {
            args.insert(format!("label:{name}"), json!(value));
        } else {
            request_complete = false;
        }
    }
    if let Some(target) = &record.target {
        args.insert("target".to_owned(), json!(target));
    }
    if !record.platforms.is_empty() {
        args.insert("platform".to_owned(), json!(record.platforms.join(",")));
    }
    let mut request = Map::new();
    request.insert("frontend".to_owned(), json!("dockerfile.v0"));
    if !args.is_empty() {
        request.insert("args".to_owned(), Value::Object(args));
    }
    request.insert(
        "locals".to_owned(),
        json!([{ "name": "context" }, { "name": "dockerfile" }]),
    );
    if max {
        let ids = |list: &[SecretId]| -> Value {
            list.iter()
                .map(|secret| {
                    let mut entry = json!({ "id": secret.id });
                    if secret.optional {
                        entry["optional"] = json!(true);
                    }
                    entry
                })
                .collect()
        };
        if !record.secrets.is_empty() {
            request.insert("secrets".to_owned(), ids(&record.secrets));
        }
        if !record.ssh.is_empty() {
            request.insert("ssh".to_owned(), ids(&record.ssh));
        }
    }
    if !redacted.is_empty() {
        request.insert("redacted".to_owned(), Value::Array(redacted));
    }

    let mut config_source = Map::new();
    let git = record
        .context
        .as_ref()
        .and_then(|context| context.git.as_ref());
    if let Some(git) = git {
        if let Some(url) = &git.url {
            config_source.insert("uri".to_owned(), json!(without_credentials(url)));
        }
        config_source.insert("digest".to_owned(), digest_set(&git.commit));
    }
    config_source.insert("path".to_owned(), json!(record.dockerfile_path));

    let mut dependencies = Vec::new();
    let mut dependencies_complete = true;
    for base in &record.base_images {
        let purl = image_purl(&base.reference, Some(&base.platform));
        let purl = if base.local {
            purl.replacen("pkg:docker/", "pkg:oci/", 1)
        } else {
            purl
        };
        if base.digest.is_empty() {
            dependencies_complete = false;
        }
        dependencies.push(json!({ "uri": purl, "digest": split_digest(&base.digest) }));
    }
    if let Some(git) = git {
        let mut entry = json!({ "digest": digest_set(&git.commit) });
        match &git.url {
            Some(url) => entry["uri"] = json!(without_credentials(url)),
            None => entry["name"] = json!("context-git"),
        }
        dependencies.push(entry);
    }
    if let Some(context) = &record.context {
        dependencies.push(json!({ "name": "context", "digest": { "sha256": context.sha256 } }));
        // A local directory cannot be fetched again: complete only when it is a clean git
        // checkout (BuildKit: local sources make the materials incomplete).
        dependencies_complete &= context.git.is_some();
    }
    for named in &record.named_contexts {
        dependencies.push(
            json!({ "name": format!("context:{}", named.name), "digest": { "sha256": named.sha256 } }),
        );
        // A local directory cannot be fetched again (as the main context).
        dependencies_complete = false;
    }
    for git in &record.git {
        let mut entry = json!({ "digest": digest_set(&git.commit) });
        if let Some(url) = &git.url {
            entry["uri"] = json!(without_credentials(url));
        }
        dependencies.push(entry);
    }
    for http in &record.http {
        dependencies.push(
            json!({ "uri": without_credentials(&http.url), "digest": { "sha256": http.sha256 } }),
        );
    }

    let scrubbed = |text: &str| -> String {
        scrub
            .iter()
            .fold(text.to_owned(), |text, value| text.replace(value, REDACTED))
    };
    let source = match (&record.dockerfile, max) {
        (Some(dockerfile), true) => {
            use sha2::Digest as _;
            Some(json!({
                "infos": [{
                    "filename": record.dockerfile_path,
                    "language": "Dockerfile",
                    "data": base64::engine::general_purpose::STANDARD.encode(dockerfile.as_bytes()),
                    "digest": { "sha256": hex::encode(sha2::Sha256::digest(dockerfile.as_bytes())) },
                }],
            }))
        }
        _ => None,
    };
    let steps = (max && !record.steps.is_empty()).then(|| {
        let steps: Vec<Value> = record
            .steps
            .iter()
            .map(|step| {
                let mut step = step.clone();
                step.instruction = scrubbed(&step.instruction);
                serde_json::to_value(&step).expect("a step serialises")
            })
            .collect();
        json!({ "steps": steps })
    });
    let clamp = |time: i64| super::clamped_time(time, record.source_date_epoch);
    Parts {
        config_source,
        request,
        dependencies,
        request_complete,
        dependencies_complete,
        hermetic: dependencies_complete && !record.network,
        source,
        steps,
        started: clamp(record.started),
        finished: clamp(record.finished),
    }
}

/// The SLSA v1 predicate.
pub fn predicate_v1(record: &BuildRecord) -> Value {
    let parts = parts(record);
    let mut internal = Map::new();
    internal.insert("builderPlatform".to_owned(), json!(record.builder_platform));
    if let Some(steps) = parts.steps {
        internal.insert("buildConfig".to_owned(), steps);
    }
    if let Some(source) = parts.source {
        internal.insert("source".to_owned(), source);
    }
    internal.insert(
        "completeness".to_owned(),
        json!({ "request": parts.request_complete, "resolvedDependencies": parts.dependencies_complete }),
    );
    internal.insert("hermetic".to_owned(), json!(parts.hermetic));
    internal.insert("reproducible".to_owned(), json!(record.reproducible));
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "configSource": parts.config_source,
                "request": parts.request,
            },
            "internalParameters": internal,
            "resolvedDependencies": parts.dependencies,
        },
        "runDetails": {
            "builder": { "id": record.builder_id },
            "metadata": {
                "invocationId": record.invocation_id,
                "startedOn": parts.started,
                "finishedOn": parts.finished,
            },
        },
    })
}

/// The SLSA v0.2 predicate, in BuildKit's v0.2 shape.
pub fn predicate_v02(record: &BuildRecord) -> Value {
    let parts = parts(record);
    let mut config_source = parts.config_source.clone();
    if let Some(path) = config_source.remove("path") {
        config_source.insert("entryPoint".to_owned(), path);
    }
    // v0.2 materials have a URI; the context (a local directory) has none, so it is named
    // by its digest only under `context` in the extension metadata instead.
    let materials: Vec<Value> = parts
        .dependencies
        .iter()
        .filter(|dependency| dependency.get("uri").is_some())
        .cloned()
        .collect();
    let mut extension = Map::new();
    if let Some(context) = &record.context {
        extension.insert(
            "context".to_owned(),
            json!({ "digest": { "sha256": context.sha256 } }),
        );
    }
    if let Some(source) = parts.source {
        extension.insert("source".to_owned(), source);
    }
    let mut predicate = json!({
        "builder": { "id": record.builder_id },
        "buildType": BUILD_TYPE,
        "materials": materials,
        "invocation": {
            "configSource": config_source,
            "parameters": parts.request,
            "environment": { "platform": record.builder_platform },
        },
        "metadata": {
            "buildInvocationID": record.invocation_id,
            "buildStartedOn": parts.started,
            "buildFinishedOn": parts.finished,
            "completeness": {
                "parameters": parts.request_complete,
                "environment": true,
                "materials": parts.dependencies_complete,
            },
            "reproducible": record.reproducible,
            format!("{BUILD_TYPE}#metadata"): extension,
            format!("{BUILD_TYPE}#hermetic"): parts.hermetic,
        },
    });
    if let Some(steps) = parts.steps {
        predicate["buildConfig"] = steps;
    }
    predicate
}

/// The provenance statement about `subjects` (the image manifest of `record.platform`).
pub fn statement(
    record: &BuildRecord,
    slsa: SlsaVersion,
    subjects: Vec<Subject>,
    version: StatementVersion,
) -> Statement {
    let predicate = match slsa {
        SlsaVersion::V1 => predicate_v1(record),
        SlsaVersion::V02 => predicate_v02(record),
    };
    Statement::new(version, slsa.predicate_type(), subjects, predicate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(mode: Mode) -> BuildRecord {
        BuildRecord {
            mode,
            dockerfile_path: "Dockerfile".to_owned(),
            dockerfile: Some(
                "FROM debian:bookworm\nARG GITHUB_TOKEN\nRUN echo $GITHUB_TOKEN\n".to_owned(),
            ),
            target: Some("app".to_owned()),
            build_args: [
                ("GITHUB_TOKEN".to_owned(), "ghp_s3cr3t".to_owned()),
                ("VERSION".to_owned(), "1.2".to_owned()),
            ]
            .into(),
            labels: BTreeMap::new(),
            platforms: vec!["linux/amd64".to_owned(), "linux/arm64".to_owned()],
            platform: "linux/arm64".to_owned(),
            builder_platform: "linux/amd64".to_owned(),
            base_images: vec![BaseImage {
                reference: "debian:bookworm".to_owned(),
                platform: "linux/arm64".to_owned(),
                digest: format!("sha256:{}", "c".repeat(64)),
                local: false,
            }],
            context: Some(Context {
                sha256: "d".repeat(64),
                git: Some(GitSource {
                    url: Some("https://user:pat@example.com/org/repo.git".to_owned()),
                    commit: "e".repeat(40),
                }),
            }),
            http: Vec::new(),
            git: vec![GitSource {
                url: Some("git://127.0.0.1/tools.git".to_owned()),
                commit: "f".repeat(40),
            }],
            named_contexts: Vec::new(),
            secrets: vec![SecretId {
                id: "npmrc".to_owned(),
                optional: false,
            }],
            ssh: Vec::new(),
            steps: vec![Step {
                id: "step0".to_owned(),
                platform: "linux/arm64".to_owned(),
                stage: "0".to_owned(),
                instruction: "RUN echo ghp_s3cr3t".to_owned(),
                lines: Some((3, 3)),
                inputs: Vec::new(),
                cached: false,
                layer: None,
            }],
            network: true,
            reproducible: false,
            builder_id: DEFAULT_BUILDER_ID.to_owned(),
            invocation_id: invocation_id(Some(0), b"request"),
            started: 2_000_000_000,
            finished: 2_000_000_100,
            source_date_epoch: Some(1_700_000_000),
        }
    }

    #[test]
    fn max_mode_redacts_secret_looking_args_everywhere() {
        let v1 = predicate_v1(&record(Mode::Max));
        let text = serde_json::to_string(&v1).unwrap();
        assert!(!text.contains("ghp_s3cr3t"), "{text}");
        assert!(!text.contains("user:pat"), "{text}");
        let request = &v1["buildDefinition"]["externalParameters"]["request"];
        assert_eq!(request["args"]["build-arg:GITHUB_TOKEN"], REDACTED);
        assert_eq!(request["args"]["build-arg:VERSION"], "1.2");
        assert_eq!(request["redacted"][0]["arg"], "build-arg:GITHUB_TOKEN");
        assert_eq!(request["secrets"][0]["id"], "npmrc");
        assert_eq!(
            v1["buildDefinition"]["resolvedDependencies"][0]["uri"],
            "pkg:docker/debian@bookworm?platform=linux%2Farm64"
        );
        // A git repository ADD checked out: its remote and commit.
        let dependencies = v1["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap();
        assert!(
            dependencies
                .iter()
                .any(|entry| entry["uri"] == "git://127.0.0.1/tools.git"
                    && entry["digest"]["sha1"] == "f".repeat(40)),
            "{dependencies:?}"
        );
        assert_eq!(
            v1["runDetails"]["metadata"]["startedOn"],
            "2023-11-14T22:13:20Z"
        );
        let steps = &v1["buildDefinition"]["internalParameters"]["buildConfig"]["steps"];
        assert_eq!(steps[0]["instruction"], "RUN echo <redacted>");
    }

    #[test]
    fn named_directory_contexts_are_dependencies_by_digest_and_incomplete() {
        let mut record = record(Mode::Min);
        record.named_contexts.push(NamedContext {
            name: "base".to_owned(),
            sha256: "a".repeat(64),
        });
        let v1 = predicate_v1(&record);
        let dependencies = v1["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap();
        assert!(
            dependencies.contains(
                &json!({ "name": "context:base", "digest": { "sha256": "a".repeat(64) } })
            ),
            "{dependencies:?}"
        );
        assert_eq!(
            v1["buildDefinition"]["internalParameters"]["completeness"]["resolvedDependencies"],
            json!(false)
        );
    }

    #[test]
    fn min_mode_leaves_args_and_secrets_out_and_says_so() {
        let record = record(Mode::Min);
        let v1 = predicate_v1(&record);
        let request = &v1["buildDefinition"]["externalParameters"]["request"];
        assert_eq!(
            request["args"],
            json!({"platform": "linux/amd64,linux/arm64", "target": "app"})
        );
        assert!(request.get("secrets").is_none());
        let internal = &v1["buildDefinition"]["internalParameters"];
        assert_eq!(internal["completeness"]["request"], false);
        assert!(internal.get("buildConfig").is_none() && internal.get("source").is_none());
        let v02 = predicate_v02(&record);
        assert_eq!(v02["metadata"]["completeness"]["parameters"], false);
        assert_eq!(
            v02["invocation"]["configSource"]["entryPoint"],
            "Dockerfile"
        );
        // The base image, the context's commit and the repository ADD checked out.
        assert_eq!(v02["materials"].as_array().unwrap().len(), 3);
        // Same record, same bytes; the invocation id is derived.
        assert_eq!(
            serde_json::to_vec(&predicate_v02(&record)).unwrap(),
            serde_json::to_vec(&v02).unwrap()
        );
        assert_eq!(invocation_id(Some(1), b"a"), invocation_id(Some(1), b"a"));
        assert_ne!(invocation_id(Some(1), b"a"), invocation_id(Some(1), b"b"));
        assert_eq!(invocation_id(None, b"a").len(), 25);
    }
}
