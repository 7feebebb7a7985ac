//! `-o`/`--output` specs in buildx's syntax: comma-separated `key=value` pairs
//! (`type=oci,dest=x.tar`), or a bare path meaning `type=local,dest=PATH` (`-` alone: a tar
//! of the root filesystem on stdout, as buildx takes it).

use std::path::PathBuf;

use super::{MediaTypes, Output};
use crate::layer::Compression;
use crate::oci::annotation::{Annotation, AnnotationKind};

/// A `-o` spec xbuild does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("output \"{spec}\": {reason}")]
pub struct OutputSpecError {
    /// What the user wrote.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Keys the image types (`image`, `registry`) accept besides `type` and `annotation*`.
const IMAGE_KEYS: &[&str] = &[
    "name",
    "push",
    "push-by-digest",
    "name-canonical",
    "registry.insecure",
    "oci-mediatypes",
    "compression",
    "compression-level",
    "force-compression",
    "rewrite-timestamp",
    "unpack",
    "store",
    "dangling-name-prefix",
    "attestation-layout",
    "oci-artifact",
];
/// Keys the archive types (`oci`, `docker`) accept besides `type` and `annotation*`.
const ARCHIVE_KEYS: &[&str] = &[
    "dest",
    "tar",
    "name",
    "oci-mediatypes",
    "compression",
    "compression-level",
    "force-compression",
    "rewrite-timestamp",
    "attestation-layout",
    "oci-artifact",
];
/// Keys the root filesystem types (`local`, `tar`) accept besides `type`.
const ROOTFS_KEYS: &[&str] = &["dest", "platform-split"];
/// Keys `containerd` accepts besides `type` and `annotation*`.
const CONTAINERD_KEYS: &[&str] = &["name", "namespace", "unpack"];

/// Keys each type accepts besides `type` (buildx's names); the image and archive types
/// also take `annotation[-TYPE][PLATFORMS].KEY`.
fn known_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "oci" | "docker" => ARCHIVE_KEYS,
        "local" | "tar" => ROOTFS_KEYS,
        "registry" | "image" => IMAGE_KEYS,
        "containerd" => CONTAINERD_KEYS,
        _ => &[],
    }
}

fn parse_bool(spec: &str, key: &str, value: &str) -> Result<bool, OutputSpecError> {
    crate::cache::spec::parse_go_bool(value).ok_or_else(|| OutputSpecError {
        spec: spec.to_owned(),
        reason: format!("{key}={value}: expected true or false"),
    })
}

/// Splits a spec into its comma-separated fields as buildx does (a CSV record): a comma
/// inside double quotes does not split (`type=image,"name=a,b"` or `name="a,b"`), and the
/// quotes are dropped (`""` inside quotes is one `"`).
///
/// # Errors
/// An unterminated quote.
pub fn split_fields(spec: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            other => field.push(other),
        }
    }
    if quoted {
        return Err("unterminated quote".to_owned());
    }
    fields.push(field);
    Ok(fields)
}

/// One `-o` spec with the keys that are not part of [`Output`] itself: what the build and
/// the CLI do for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// The output.
    pub output: Output,
    /// `name=` (comma-separated inside quotes for several): names of the result, added to
    /// the `-t` names.
    pub names: Vec<String>,
    /// `compression=` (checked with `compression-level` and `force-compression`): the
    /// compression of the layers the build makes, at its `compression-level`.
    pub compression: Option<Compression>,
    /// `force-compression=true`: the base image's layers are converted to `compression`
    /// too.
    pub force_compression: bool,
    /// `annotation[-TYPE][PLATFORMS].KEY=VALUE` keys, each with how it was written.
    pub annotations: Vec<(String, Annotation)>,
    /// `name-canonical=true`: each name is also given as `NAME@DIGEST` in the store.
    pub name_canonical: bool,
    /// `dangling-name-prefix=PREFIX`: without a name, the result is named
    /// `PREFIX@DIGEST` in the store.
    pub dangling_name_prefix: Option<String>,
    /// `attestation-layout=referrers|buildx` with BuildKit's `oci-artifact=`: where the
    /// build's attestations go (`None`: not given).
    pub attestation_layout: Option<crate::attest::options::Layout>,
    /// `rewrite-timestamp=true`: the files of the layers the build makes have their mtimes
    /// clamped to SOURCE_DATE_EPOCH (what xbuild's layers always get with an epoch; without
    /// one the CLI warns, as BuildKit does).
    pub rewrite_timestamp: bool,
}

/// What BuildKit refuses beside `oci-mediatypes=false` (its image exporter's checks):
/// `compression=zstd` (zstd layers have OCI types only), `oci-artifact=true`, and index,
/// index-descriptor or manifest-descriptor annotations (Docker's types have no place for
/// them).
fn docker_types_conflicts(spec: &OutputSpec, oci_artifact: Option<&str>) -> Result<(), String> {
    if spec
        .compression
        .is_some_and(|compression| compression.algorithm() == crate::layer::Algorithm::Zstd)
    {
        return Err(
            "compression=zstd conflicts with oci-mediatypes=false (zstd layers have OCI media \
             types only)"
                .to_owned(),
        );
    }
    if oci_artifact.and_then(crate::cache::spec::parse_go_bool) == Some(true) {
        return Err("oci-artifact=true conflicts with oci-mediatypes=false".to_owned());
    }
    if let Some((text, _)) = spec.annotations.iter().find(|(_, annotation)| {
        annotation
            .kind
            .is_some_and(|kind| kind != AnnotationKind::Manifest)
    }) {
        return Err(format!(
            "{text}: cannot export index or descriptor annotations with oci-mediatypes=false \
             (only manifest annotations)"
        ));
    }
    Ok(())
}

impl OutputSpec {
    /// Parses one `-o` value (see [`Output::parse`]) with every buildx key of its type.
    ///
    /// # Errors
    /// [`OutputSpecError`] naming unknown types and keys (with the known ones), bad values,
    /// values xbuild cannot honour yet (`compression=estargz`, `unpack=true`), what BuildKit refuses beside
    /// `oci-mediatypes=false`, and `store=false` or
    /// `registry.insecure=true` on an output that does not push.
    pub fn parse(spec: &str) -> Result<Self, OutputSpecError> {
        Self::parse_with_push(spec, false)
    }

    /// As [`Self::parse`]; `push` (`--push`): a `type=image` output pushes, as buildx sets
    /// `push=true` on it then.
    ///
    /// # Errors
    /// As [`Self::parse`].
    pub fn parse_with_push(spec: &str, push: bool) -> Result<Self, OutputSpecError> {
        let error = |reason: String| OutputSpecError {
            spec: spec.to_owned(),
            reason,
        };
        let mut parsed = Self {
            output: Output::STORE,
            names: Vec::new(),
            compression: None,
            force_compression: false,
            annotations: Vec::new(),
            name_canonical: false,
            dangling_name_prefix: None,
            attestation_layout: None,
            rewrite_timestamp: false,
        };
        if spec.is_empty() {
            return Err(error("empty output spec".to_owned()));
        }
        if !spec.contains('=') {
            parsed.output = if spec == "-" {
                Output::Tar {
                    dest: PathBuf::from("-"),
                    split: None,
                }
            } else {
                Output::Local {
                    dest: PathBuf::from(spec),
                    split: None,
                }
            };
            return Ok(parsed);
        }
        let fields = split_fields(spec).map_err(error)?;
        let mut media_types = MediaTypes::Oci;
        let mut docker_oci = false;
        let mut kind = None;
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for part in &fields {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let key = key.trim();
            if key == "type" {
                kind = Some(value.trim());
            } else {
                pairs.push((key, value));
            }
        }
        let Some(kind) = kind else {
            return Err(error(
                "no type= (expected type=oci|docker|local|tar|registry|image|containerd)"
                    .to_owned(),
            ));
        };
        if known_keys(kind).is_empty() {
            return Err(error(format!(
                "unknown type \"{kind}\" (expected oci, docker, local, tar, registry, image or \
                 containerd)"
            )));
        }
        let takes_annotations = !matches!(kind, "local" | "tar");
        let mut unknown = Vec::new();
        for (key, value) in &pairs {
            if known_keys(kind).contains(key) {
                continue;
            }
            match Annotation::parse_output_key(key, value) {
                Some(annotation) if takes_annotations => {
                    let annotation = annotation.map_err(|e| error(e.to_string()))?;
                    parsed
                        .annotations
                        .push((format!("{key}={value}"), annotation));
                }
                _ => unknown.push(*key),
            }
        }
        if !unknown.is_empty() {
            return Err(error(format!(
                "unknown key{} {} for type={kind} (known: {}{}){}",
                if unknown.len() == 1 { "" } else { "s" },
                unknown.join(", "),
                known_keys(kind).join(", "),
                if takes_annotations {
                    ", annotation[-TYPE][PLATFORMS].KEY"
                } else {
                    ""
                },
                // Docker's exporter overview writes `type=registry,tag=...`; BuildKit has no
                // such key and pushes nothing under it.
                if unknown.contains(&"tag") && known_keys(kind).contains(&"name") {
                    "; the image's name is name=NAME (BuildKit has no tag= key: it would push \
                     the image under no name)"
                } else {
                    ""
                }
            )));
        }
        let value = |wanted: &str| {
            pairs
                .iter()
                .rev()
                .find(|(key, _)| *key == wanted)
                .map(|(_, value)| *value)
        };
        let flag =
            |key: &str, default: bool| value(key).map_or(Ok(default), |v| parse_bool(spec, key, v));
        // Keys whose other value xbuild does not write yet: refused, never ignored.
        let unsupported = |key: &str, default: bool, why: &str| -> Result<(), OutputSpecError> {
            if flag(key, default)? == default {
                Ok(())
            } else {
                Err(error(format!(
                    "{key}={} is not supported yet: {why}",
                    !default
                )))
            }
        };
        parsed.names = pairs
            .iter()
            .filter(|(key, _)| *key == "name")
            .flat_map(|(_, names)| names.split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        if !matches!(kind, "local" | "tar" | "containerd") {
            (parsed.compression, parsed.force_compression) = crate::cache::spec::layer_compression(
                value("compression"),
                value("compression-level"),
                value("force-compression"),
            )
            .map_err(|(reason, _)| error(reason))?;
            if value("attestation-layout").is_some() || value("oci-artifact").is_some() {
                let oci_artifact = value("oci-artifact")
                    .map(|v| parse_bool(spec, "oci-artifact", v))
                    .transpose()?;
                parsed.attestation_layout = Some(
                    crate::attest::options::Layout::parse(
                        value("attestation-layout"),
                        oci_artifact,
                    )
                    .map_err(error)?,
                );
            }
            parsed.rewrite_timestamp = flag("rewrite-timestamp", false)?;
            if kind == "docker" {
                docker_oci = flag("oci-mediatypes", false)?;
            } else if !flag("oci-mediatypes", true)? {
                media_types = MediaTypes::Docker;
                docker_types_conflicts(&parsed, value("oci-artifact")).map_err(error)?;
            }
        }
        let pushes = kind == "registry" || (kind == "image" && (push || flag("push", false)?));
        if matches!(kind, "image" | "registry") {
            if !pushes {
                // BuildKit takes them and does nothing; refused rather than ignored.
                if flag("registry.insecure", false)? {
                    return Err(error(
                        "registry.insecure=true needs push=true (or --push): nothing is pushed"
                            .to_owned(),
                    ));
                }
                if !flag("store", true)? {
                    return Err(error(
                        "store=false needs push=true (or --push): the image would go nowhere"
                            .to_owned(),
                    ));
                }
            }
            unsupported(
                "unpack",
                false,
                "xbuild's store has no containerd snapshotter (`-o type=containerd,unpack=true` \
                 loads into containerd and unpacks there; xbuild's store unpacks an image when \
                 `xbuild run` needs it)",
            )?;
            parsed.name_canonical = flag("name-canonical", false)?;
            parsed.dangling_name_prefix = value("dangling-name-prefix")
                .map(str::trim)
                .filter(|prefix| !prefix.is_empty())
                .map(str::to_owned);
            if let Some(prefix) = &parsed.dangling_name_prefix {
                let probe = format!("{prefix}@sha256:{}", "0".repeat(64));
                crate::registry::ImageRef::parse(&probe)
                    .map_err(|reason| error(format!("dangling-name-prefix={prefix}: {reason}")))?;
            }
            if !flag("store", true)? {
                if parsed.name_canonical {
                    return Err(error(
                        "name-canonical=true names the image in the store: not with store=false"
                            .to_owned(),
                    ));
                }
                if parsed.dangling_name_prefix.is_some() {
                    return Err(error(
                        "dangling-name-prefix names the image in the store: not with store=false"
                            .to_owned(),
                    ));
                }
            }
        }
        let dest = || {
            value("dest")
                .filter(|dest| !dest.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| error(format!("type={kind} needs dest=PATH")))
        };
        let media_types_of_image = media_types;
        let split = value("platform-split")
            .map(|v| parse_bool(spec, "platform-split", v))
            .transpose()?;
        let tar = flag("tar", true)?;
        if !tar {
            if kind == "docker" {
                // BuildKit writes the Docker-typed layout unpacked; xbuild's docker output is
                // a docker-archive (or its OCI-typed form) only.
                unsupported(
                    "tar",
                    true,
                    "type=docker writes a docker-archive file; type=oci,tar=false writes an \
                     OCI layout directory",
                )?;
            }
            if value("dest") == Some("-") {
                return Err(error(
                    "tar=false writes a directory: dest=- (stdout) needs tar=true".to_owned(),
                ));
            }
        }
        parsed.output = match kind {
            "oci" => Output::Oci {
                dest: dest()?,
                referrers: true,
                media_types: media_types_of_image,
                tar,
            },
            "docker" => Output::Docker {
                dest: value("dest").filter(|d| !d.is_empty()).map(PathBuf::from),
                oci_media_types: docker_oci,
            },
            "local" => Output::Local {
                dest: dest()?,
                split,
            },
            "tar" => Output::Tar {
                dest: dest()?,
                split,
            },
            "containerd" => {
                let namespace = value("namespace").map(str::trim).map(str::to_owned);
                if let Some(namespace) = &namespace {
                    if !super::containerd::valid_namespace(namespace) {
                        return Err(error(format!(
                            "namespace={namespace}: not a containerd namespace (letters and \
                             digits, words joined by one '.', '_' or '-')"
                        )));
                    }
                }
                Output::Containerd {
                    namespace,
                    unpack: flag("unpack", false)?,
                }
            }
            "registry" => {
                if !flag("push", true)? {
                    return Err(error(
                        "type=registry always pushes (use type=image to keep it local)".to_owned(),
                    ));
                }
                Output::Registry {
                    by_digest: flag("push-by-digest", false)?,
                    media_types: media_types_of_image,
                    store: flag("store", true)?,
                    insecure: flag("registry.insecure", false)?,
                }
            }
            _ => {
                if pushes {
                    Output::Registry {
                        by_digest: flag("push-by-digest", false)?,
                        media_types: media_types_of_image,
                        store: flag("store", true)?,
                        insecure: flag("registry.insecure", false)?,
                    }
                } else if flag("push-by-digest", false)? {
                    return Err(error("push-by-digest=true needs push=true".to_owned()));
                } else {
                    Output::Store {
                        media_types: media_types_of_image,
                    }
                }
            }
        };
        Ok(parsed)
    }
}

impl Output {
    /// Parses one `-o` value: `type=oci,dest=x.tar`, `type=docker[,dest=x.tar]` (without
    /// `dest`: load into the Docker engine, as `--load`), `type=local,dest=dir`,
    /// `type=tar,dest=x.tar`, `type=registry[,push-by-digest=true]`, `type=image,push=true`
    /// (`type=image` without `push=true` names the image in the local store), or a bare path
    /// (`type=local`; `-` is `type=tar` to stdout). The other keys are [`OutputSpec`]'s.
    ///
    /// # Errors
    /// [`OutputSpecError`] naming unknown types and keys, a missing `dest`, bad values.
    pub fn parse(spec: &str) -> Result<Self, OutputSpecError> {
        OutputSpec::parse(spec).map(|parsed| parsed.output)
    }

    /// The `name=` of a `-o` spec (buildx's way to name what is pushed or written, as
    /// `-o type=registry,name=REG/app,push-by-digest=true` in CI jobs; several
    /// comma-separated inside quotes); the caller adds them to the `-t` names. Nothing for a
    /// spec that does not parse (its error comes from [`Output::parse`]).
    pub fn names(spec: &str) -> Vec<String> {
        OutputSpec::parse(spec)
            .map(|parsed| parsed.names)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case(
        "type=oci,dest=x.tar",
        Output::Oci { dest: "x.tar".into(), referrers: true, media_types: MediaTypes::Oci, tar: true }
    )]
    #[case(
        "type=oci,dest=layout,tar=false",
        Output::Oci { dest: "layout".into(), referrers: true, media_types: MediaTypes::Oci, tar: false }
    )]
    #[case("type=docker,dest=x.tar", Output::Docker { dest: Some("x.tar".into()), oci_media_types: false })]
    #[case("type=docker,dest=x.tar,tar=true", Output::Docker { dest: Some("x.tar".into()), oci_media_types: false })]
    #[case("type=docker,dest=x.tar,oci-mediatypes=true", Output::Docker { dest: Some("x.tar".into()), oci_media_types: true })]
    #[case("type=docker", Output::Docker { dest: None, oci_media_types: false })]
    #[case("type=docker,oci-mediatypes=true", Output::Docker { dest: None, oci_media_types: true })]
    #[case("type=local,dest=out", Output::Local { dest: "out".into(), split: None })]
    #[case("dest=out,type=local", Output::Local { dest: "out".into(), split: None })]
    #[case("out/dir", Output::Local { dest: "out/dir".into(), split: None })]
    #[case("-", Output::Tar { dest: "-".into(), split: None })]
    #[case("type=tar,dest=rootfs.tar", Output::Tar { dest: "rootfs.tar".into(), split: None })]
    #[case("type=tar,dest=-", Output::Tar { dest: "-".into(), split: None })]
    #[case("type=registry", Output::push(false))]
    #[case("type=registry,push-by-digest=true", Output::push(true))]
    #[case("type=image,push=true", Output::push(false))]
    #[case("type=image,push=true,push-by-digest=true", Output::push(true))]
    #[case("type=image", Output::STORE)]
    #[case("type=image,push=false", Output::STORE)]
    #[case("type=containerd", Output::Containerd { namespace: None, unpack: false })]
    #[case(
        "type=containerd,namespace=k8s.io,unpack=true,name=app:1",
        Output::Containerd { namespace: Some("k8s.io".into()), unpack: true }
    )]
    fn good_specs(#[case] spec: &str, #[case] expected: Output) {
        assert_eq!(Output::parse(spec), Ok(expected));
    }

    #[rstest]
    #[case(
        "type=oci,dest=x.tar,compressed=zstd",
        "unknown key compressed for type=oci"
    )]
    #[case(
        "type=local,dest=d,foo=1,bar=2",
        "unknown keys foo, bar for type=local"
    )]
    #[case("type=cacheonly", "unknown type \"cacheonly\"")]
    #[case("dest=x.tar", "no type=")]
    #[case("type=oci", "type=oci needs dest=PATH")]
    #[case("type=tar,dest=", "type=tar needs dest=PATH")]
    #[case("type=registry,push-by-digest=maybe", "push-by-digest=maybe")]
    #[case("type=image,push-by-digest=true", "needs push=true")]
    #[case("", "empty output spec")]
    fn bad_specs_name_what_is_wrong(#[case] spec: &str, #[case] fragment: &str) {
        let error = Output::parse(spec).expect_err("refused");
        assert!(error.to_string().contains(fragment), "{error}");
        assert!(error.to_string().contains(spec), "{error}");
    }
}

#[cfg(test)]
mod name_tests {
    use rstest::rstest;

    use super::*;

    #[test]
    fn registry_outputs_give_their_names() {
        assert_eq!(
            Output::names("type=registry,name=reg:5000/app,push-by-digest=true"),
            ["reg:5000/app"]
        );
        assert_eq!(
            Output::parse("type=image,name=reg/app,push=true").unwrap(),
            Output::push(false)
        );
        assert!(Output::names("type=registry").is_empty());
        assert!(Output::names("out-dir").is_empty());
    }

    #[test]
    fn every_buildx_key_of_each_type() {
        let spec = OutputSpec::parse(
            "type=image,\"name=reg/a:1,reg/b:2\",push=true,push-by-digest=false,\
             name-canonical=true,registry.insecure=false,oci-mediatypes=true,compression=zstd,\
             compression-level=3,force-compression=false,rewrite-timestamp=false,unpack=false,\
             store=true,dangling-name-prefix=dangling,annotation.org.example=v,\
             annotation-index.org.i=w,annotation-manifest[linux/arm64].org.m=x",
        )
        .unwrap();
        assert_eq!(spec.output, Output::push(false));
        assert_eq!(spec.names, ["reg/a:1", "reg/b:2"]);
        assert_eq!(spec.compression, Some(Compression::Zstd));
        assert!(spec.name_canonical);
        assert_eq!(spec.dangling_name_prefix.as_deref(), Some("dangling"));
        let keys: Vec<&str> = spec
            .annotations
            .iter()
            .map(|(_, a)| a.key.as_str())
            .collect();
        assert_eq!(keys, ["org.example", "org.i", "org.m"]);
        let spec =
            OutputSpec::parse("type=oci,dest=x.tar,name=a/b,compression=uncompressed").unwrap();
        assert_eq!(spec.names, ["a/b"]);
        assert_eq!(spec.compression, Some(Compression::None));
        let spec = OutputSpec::parse(
            "type=registry,compression=zstd,compression-level=19,force-compression=true",
        )
        .unwrap();
        assert_eq!(
            (spec.compression, spec.force_compression),
            (
                Some(Compression::with_level(crate::layer::Algorithm::Zstd, 19).unwrap()),
                true
            )
        );
        let spec = OutputSpec::parse("type=oci,dest=x,compression-level=1").unwrap();
        assert_eq!(
            (spec.compression, spec.force_compression),
            (
                Some(Compression::with_level(crate::layer::Algorithm::Gzip, 1).unwrap()),
                false
            )
        );
        let spec =
            OutputSpec::parse("type=docker,dest=x.tar,name=\"a,b\",oci-mediatypes=false").unwrap();
        assert_eq!(spec.names, ["a", "b"]);
        assert_eq!(
            Output::parse("type=local,dest=d,platform-split=true"),
            Ok(Output::Local {
                dest: "d".into(),
                split: Some(true)
            })
        );
        assert_eq!(
            Output::parse("type=tar,dest=d.tar,platform-split=false"),
            Ok(Output::Tar {
                dest: "d.tar".into(),
                split: Some(false)
            })
        );
        assert_eq!(Output::names("type=registry,\"name=a,b\""), ["a", "b"]);
        assert_eq!(
            split_fields("a=1,\"b=2,3\",c=\"x\"\"y\"").unwrap(),
            ["a=1", "b=2,3", "c=x\"y"]
        );
    }

    #[test]
    fn rewrite_timestamp_on_image_and_archive_types() {
        for spec in [
            "type=image,rewrite-timestamp=true",
            "type=registry,rewrite-timestamp=true",
            "type=oci,dest=x,rewrite-timestamp=true",
            "type=docker,rewrite-timestamp=true",
        ] {
            assert!(OutputSpec::parse(spec).unwrap().rewrite_timestamp, "{spec}");
        }
        assert!(
            !OutputSpec::parse("type=oci,dest=x,rewrite-timestamp=false")
                .unwrap()
                .rewrite_timestamp
        );
        assert!(
            OutputSpec::parse("type=local,dest=d,rewrite-timestamp=true")
                .unwrap_err()
                .to_string()
                .contains("unknown key rewrite-timestamp for type=local")
        );
    }

    #[test]
    fn push_keys_of_the_image_exporter() {
        let docker = |by_digest, store, insecure| Output::Registry {
            by_digest,
            media_types: MediaTypes::Docker,
            store,
            insecure,
        };
        assert_eq!(
            Output::parse("type=image,push=true,oci-mediatypes=false"),
            Ok(docker(false, true, false))
        );
        assert_eq!(
            Output::parse(
                "type=registry,oci-mediatypes=false,store=false,registry.insecure=true,\
                 push-by-digest=true"
            ),
            Ok(docker(true, false, true))
        );
        assert_eq!(
            Output::parse("type=image,oci-mediatypes=false"),
            Ok(Output::Store {
                media_types: MediaTypes::Docker
            })
        );
        assert_eq!(
            Output::parse("type=oci,dest=x.tar,oci-mediatypes=false,compression=gzip"),
            Ok(Output::Oci {
                dest: "x.tar".into(),
                referrers: true,
                media_types: MediaTypes::Docker,
                tar: true,
            })
        );
        // Manifest annotations go into a Docker manifest too (as BuildKit writes them).
        assert!(OutputSpec::parse("type=image,oci-mediatypes=false,annotation.org.a=b").is_ok());
        assert_eq!(
            Output::parse("type=registry,oci-mediatypes=true,store=true"),
            Ok(Output::push(false))
        );
        // `--push` makes a `type=image` output push, as buildx sets `push=true` on it.
        assert_eq!(
            OutputSpec::parse_with_push("type=image,store=false,registry.insecure=true", true)
                .map(|spec| spec.output),
            Ok(Output::Registry {
                by_digest: false,
                media_types: MediaTypes::Oci,
                store: false,
                insecure: true,
            })
        );
        assert_eq!(
            OutputSpec::parse_with_push("type=image", false).map(|spec| spec.output),
            Ok(Output::STORE)
        );
    }

    #[rstest]
    #[case(
        "type=image,push=true,oci-mediatypes=false,compression=zstd",
        "compression=zstd conflicts with oci-mediatypes=false"
    )]
    #[case(
        "type=oci,dest=x,oci-mediatypes=false,oci-artifact=true,attestation-layout=buildx",
        "oci-artifact=true conflicts with oci-mediatypes=false"
    )]
    #[case(
        "type=registry,oci-mediatypes=false,annotation-manifest-descriptor.a=b",
        "annotation-manifest-descriptor.a=b: cannot export index or descriptor annotations"
    )]
    #[case(
        "type=image,oci-mediatypes=maybe",
        "oci-mediatypes=maybe: expected true or false"
    )]
    #[case(
        "type=image,compression=estargz",
        "compression=estargz is not supported yet"
    )]
    #[case(
        "type=oci,dest=x,compression=gzip,compression-level=12",
        "compression-level=12: gzip takes 0 to 9"
    )]
    #[case(
        "type=oci,dest=x,force-compression=yes",
        "force-compression=yes: expected true or false"
    )]
    #[case(
        "type=image,rewrite-timestamp=sometimes",
        "rewrite-timestamp=sometimes: expected true or false"
    )]
    #[case("type=image,unpack=true", "unpack=true is not supported yet")]
    #[case("type=image,store=false", "store=false needs push=true (or --push)")]
    #[case(
        "type=image,registry.insecure=true",
        "registry.insecure=true needs push=true (or --push)"
    )]
    #[case(
        "type=registry,store=false,name-canonical=true",
        "name-canonical=true names the image in the store: not with store=false"
    )]
    #[case("type=registry,store=no", "store=no: expected true or false")]
    #[case("type=image,push=maybe", "push=maybe: expected true or false")]
    #[case(
        "type=local,dest=d,platform-split=2",
        "platform-split=2: expected true or false"
    )]
    #[case(
        "type=local,dest=d,annotation.a=b",
        "unknown key annotation.a for type=local (known: dest, platform-split)"
    )]
    #[case("type=local,dest=d,name=x", "unknown key name for type=local")]
    #[case("type=image,annotation-bogus.a=b", "unknown annotation type")]
    #[case("type=image,\"name=a,b", "unterminated quote")]
    #[case(
        "type=containerd,namespace=a/b",
        "namespace=a/b: not a containerd namespace"
    )]
    #[case("type=containerd,unpack=yes", "unpack=yes: expected true or false")]
    #[case(
        "type=containerd,address=/run/c.sock",
        "unknown key address for type=containerd (known: name, namespace, unpack, annotation"
    )]
    #[case("type=image,dangling-name-prefix=UPPER", "dangling-name-prefix=UPPER")]
    #[case(
        "type=image,foo=1",
        "(known: name, push, push-by-digest, name-canonical"
    )]
    #[case(
        "type=registry,tag=reg/app",
        "unknown key tag for type=registry (known: name, push, push-by-digest, name-canonical"
    )]
    #[case("type=registry,tag=reg/app", "; the image's name is name=NAME")]
    #[case(
        "type=docker,dest=d,tar=false",
        "tar=false is not supported yet: type=docker"
    )]
    #[case("type=oci,dest=-,tar=false", "dest=- (stdout) needs tar=true")]
    #[case("type=oci,dest=d,tar=maybe", "tar=maybe: expected true or false")]
    fn keys_xbuild_cannot_honour_are_refused(#[case] spec: &str, #[case] fragment: &str) {
        let error = OutputSpec::parse(spec).expect_err("refused");
        assert!(error.to_string().contains(fragment), "{error}");
    }
}
