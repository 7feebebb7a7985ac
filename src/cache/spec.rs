//! `--cache-to` and `--cache-from` specs in buildx's syntax: comma-separated `key=value`
//! pairs (`type=registry,ref=REG/app:buildcache,mode=max`, `type=local,dest=DIR`), or for
//! `--cache-from` a bare reference meaning `type=registry,ref=...`.

use std::path::PathBuf;

use crate::layer::Compression;
use crate::registry::ImageRef;

/// Where a cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// An image reference in a registry (`type=registry,ref=...`).
    Registry(RegistryCache),
    /// An OCI image layout directory (`type=local,dest=DIR` / `src=DIR`).
    Local(LocalCache),
}

/// A `type=registry` cache: its reference, and how its registry is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryCache {
    /// The cache ref (`ref=REGISTRY/REPOSITORY:TAG`).
    pub reference: ImageRef,
    /// `registry.insecure=true`: the registry is reached over HTTPS without verifying its
    /// certificate, else plain HTTP (as BuildKit does).
    pub insecure: bool,
}

impl RegistryCache {
    /// A cache at `reference`, reached as any registry (certificates verified).
    pub fn new(reference: ImageRef) -> Self {
        Self {
            reference,
            insecure: false,
        }
    }

    /// The registry options to reach this cache's registry with: `options`, plus the
    /// registry as unverified when `registry.insecure=true`.
    pub fn options(
        &self,
        options: std::sync::Arc<crate::registry::RegistryOptions>,
    ) -> std::sync::Arc<crate::registry::RegistryOptions> {
        if self.insecure {
            std::sync::Arc::new(
                (*options)
                    .clone()
                    .with_unverified(self.reference.registry()),
            )
        } else {
            options
        }
    }
}

/// A `type=local` cache: a directory and which entry of its `index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCache {
    /// The OCI layout directory.
    pub dir: PathBuf,
    /// The name of the cache in `index.json` (`tag=`, default `latest`, as BuildKit).
    pub tag: String,
    /// `--cache-from ...,digest=sha256:...`: read this manifest or index of the directory
    /// instead of the tagged one.
    pub digest: Option<String>,
}

impl CacheLocation {
    /// A `type=local` cache in `dir`, under BuildKit's default name `latest`.
    pub fn local(dir: impl Into<PathBuf>) -> Self {
        Self::Local(LocalCache {
            dir: dir.into(),
            tag: super::LOCAL_REF_NAME.to_owned(),
            digest: None,
        })
    }
}

impl std::fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Registry(cache) => write!(f, "{}", cache.reference),
            Self::Local(local) => {
                write!(f, "{}", local.dir.display())?;
                if let Some(digest) = &local.digest {
                    write!(f, " ({digest})")
                } else if local.tag != super::LOCAL_REF_NAME {
                    write!(f, " (tag {})", local.tag)
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Which steps an export keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// The steps of the exported images' own stage chains (the default, as buildx).
    #[default]
    Min,
    /// Every step of the build, intermediate stages included.
    Max,
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExport {
    /// Where to write.
    pub location: CacheLocation,
    /// What to keep.
    pub mode: CacheMode,
    /// `ignore-error=true`: a failed export is a warning and the build succeeds.
    pub ignore_error: bool,
    /// `image-manifest=true`: the cache ref is one OCI image manifest (config: the records
    /// of every platform) instead of an index of one manifest per platform.
    pub image_manifest: bool,
    /// `compression=` at its `compression-level`: the compression of the cache's layers
    /// (the image's when `None`); base-image layers keep theirs, as BuildKit without
    /// `force-compression`.
    pub compression: Option<Compression>,
    /// `force-compression=true`: the base image's layers are converted to `compression`
    /// too.
    pub force_compression: bool,
    /// `oci-mediatypes=false`: the cache index is a Docker manifest list, its manifests
    /// Docker schema-2 manifests with Docker layer types (BuildKit's cache then).
    pub docker_types: bool,
}

impl CacheExport {
    /// An export to `location` with buildx's defaults for every other key.
    pub fn new(location: CacheLocation, mode: CacheMode) -> Self {
        Self {
            location,
            mode,
            ignore_error: false,
            image_manifest: false,
            compression: None,
            force_compression: false,
            docker_types: false,
        }
    }
}

/// The cache flags of a build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheOptions {
    /// `--cache-from`, in order (the first one holding a key wins).
    pub from: Vec<CacheLocation>,
    /// `--cache-to`.
    pub to: Vec<CacheExport>,
    /// Layers of imported cache hits stay in the registry until something needs their bytes
    /// (true when every output is a push, which mounts them instead); false means the local
    /// store gets every layer of the result, as it must stay complete.
    pub lazy_layers: bool,
    /// `--cache-to type=inline`: the records of each image's own steps go into its image
    /// config (see [`super::inline`]).
    pub inline: bool,
}

impl CacheOptions {
    /// Parses the `--cache-to` values: the exports, and whether one is `type=inline` (its
    /// only other key is `mode=min`: an image holds its own steps only, as BuildKit's inline
    /// cache).
    ///
    /// # Errors
    /// The first spec [`CacheExport::parse`] refuses, or an inline one with other keys.
    pub fn parse_to(specs: &[String]) -> Result<(Vec<CacheExport>, bool), CacheSpecError> {
        const FLAG: &str = "--cache-to";
        let mut exports = Vec::new();
        let mut inline = false;
        for spec in specs {
            // A bare reference is a registry cache, as buildx reads `--cache-to=user/app:cache`.
            if !spec.is_empty() && !spec.contains('=') {
                exports.push(CacheExport::parse(&format!("type=registry,ref={spec}"))?);
                continue;
            }
            let (kind, pairs) = pairs(FLAG, spec, true)?;
            if kind != "inline" {
                exports.push(CacheExport::parse(spec)?);
                continue;
            }
            check_keys(FLAG, spec, &pairs, &["mode"])?;
            match value(&pairs, "mode") {
                None | Some("min") => inline = true,
                Some(other) => {
                    return Err(CacheSpecError {
                        flag: FLAG,
                        spec: spec.clone(),
                        reason: format!(
                            "mode={other}: an inline cache holds the image's own steps only \
                             (mode=min; use type=registry,mode=max for every step)"
                        ),
                        unsupported: false,
                    });
                }
            }
        }
        Ok((exports, inline))
    }
}

/// A cache spec xbuild does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} \"{spec}\": {reason}")]
pub struct CacheSpecError {
    /// `--cache-to` or `--cache-from`.
    pub flag: &'static str,
    /// What the user wrote.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
    /// Whether it names something valid that xbuild does not support yet (`type=gha`).
    pub unsupported: bool,
}

/// `key=value` pairs of a spec, in order.
type Pairs<'a> = Vec<(&'a str, &'a str)>;

/// The type and the other pairs of a spec; `inline` says whether `type=inline` is taken
/// (only [`CacheOptions::parse_to`] takes it).
fn pairs<'a>(
    flag: &'static str,
    spec: &'a str,
    inline: bool,
) -> Result<(String, Pairs<'a>), CacheSpecError> {
    let error = |reason: String| CacheSpecError {
        flag,
        spec: spec.to_owned(),
        reason,
        unsupported: false,
    };
    let mut kind = None;
    let mut pairs = Vec::new();
    for part in spec.split(',') {
        let Some((key, value)) = part.split_once('=') else {
            return Err(error(format!("\"{part}\" is not key=value")));
        };
        if key.trim() == "type" {
            kind = Some(value.trim().to_owned());
        } else {
            pairs.push((key.trim(), value.trim()));
        }
    }
    let kind = kind.ok_or_else(|| error("no type= (expected registry or local)".to_owned()))?;
    match kind.as_str() {
        "registry" | "local" => Ok((kind, pairs)),
        "inline" if inline => Ok((kind, pairs)),
        "inline" => Err(error(if flag == "--cache-from" {
            "type=inline is for --cache-to; import an inline cache with --cache-from \
             type=registry,ref=IMAGE (or the bare image reference)"
                .to_owned()
        } else {
            "type=inline is written into the image config, not exported on its own".to_owned()
        })),
        "gha" | "s3" | "azblob" => Err(CacheSpecError {
            flag,
            spec: spec.to_owned(),
            reason: format!("type={kind} is not supported yet (use registry, local or inline)"),
            unsupported: true,
        }),
        other => Err(error(format!(
            "unknown type \"{other}\" (expected registry or local)"
        ))),
    }
}

fn registry_ref(
    flag: &'static str,
    spec: &str,
    text: &str,
    insecure: bool,
) -> Result<CacheLocation, CacheSpecError> {
    ImageRef::parse(text)
        .map(|reference| {
            CacheLocation::Registry(RegistryCache {
                reference,
                insecure,
            })
        })
        .map_err(|error| CacheSpecError {
            flag,
            spec: spec.to_owned(),
            reason: format!("ref={text}: {error}"),
            unsupported: false,
        })
}

fn check_keys(
    flag: &'static str,
    spec: &str,
    pairs: &[(&str, &str)],
    known: &[&str],
) -> Result<(), CacheSpecError> {
    for (key, _) in pairs {
        if !known.contains(key) {
            return Err(CacheSpecError {
                flag,
                spec: spec.to_owned(),
                reason: format!("unknown key {key} (known: {})", known.join(", ")),
                unsupported: false,
            });
        }
    }
    Ok(())
}

fn value<'a>(pairs: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .filter(|v| !v.is_empty())
}

/// `registry.insecure=true` (on both cache flags): the cache's registry is reached over
/// HTTPS without verifying its certificate, else plain HTTP.
fn insecure(
    flag: &'static str,
    spec: &str,
    pairs: &[(&str, &str)],
) -> Result<bool, CacheSpecError> {
    Ok(bool_key(flag, spec, pairs, "registry.insecure")?.unwrap_or(false))
}

/// A boolean key as BuildKit reads it (Go's `strconv.ParseBool`, and an empty value meaning
/// true); `None` when the key is absent.
fn bool_key(
    flag: &'static str,
    spec: &str,
    pairs: &[(&str, &str)],
    key: &str,
) -> Result<Option<bool>, CacheSpecError> {
    let Some((_, text)) = pairs.iter().rev().find(|(k, _)| *k == key) else {
        return Ok(None);
    };
    parse_go_bool(text).map(Some).ok_or_else(|| CacheSpecError {
        flag,
        spec: spec.to_owned(),
        reason: format!("{key}={text}: expected true or false"),
        unsupported: false,
    })
}

/// Go's `strconv.ParseBool` (what BuildKit reads boolean keys with), an empty value being
/// true as in BuildKit's `force-compression`.
pub fn parse_go_bool(text: &str) -> Option<bool> {
    if text.is_empty() {
        return Some(true);
    }
    crate::gostd::parse_bool(text)
}

/// The layer keys BuildKit shares between cache exports and image outputs
/// (`compression`, `compression-level`, `force-compression`), as BuildKit reads them: the
/// layers the build makes get `compression` (gzip when only a level or
/// `force-compression` is given) at `compression-level` (see
/// [`Compression::with_level`]); `force-compression=true` (an empty value is true)
/// converts the base image's layers too. Returns the compression (`None`: none of the
/// keys given) and whether it is forced. The error is the reason, and whether it is
/// "not supported yet".
///
/// # Errors
/// A bad or unsupported value: the reason, and whether it is "not supported yet".
pub fn layer_compression(
    compression: Option<&str>,
    level: Option<&str>,
    force: Option<&str>,
) -> Result<(Option<Compression>, bool), (String, bool)> {
    let mut chosen = match compression {
        None => None,
        Some(name @ ("gzip" | "zstd" | "uncompressed")) => Compression::parse(name),
        Some("estargz") => {
            return Err((
                "compression=estargz is not supported yet (use gzip, zstd or uncompressed)"
                    .to_owned(),
                true,
            ));
        }
        Some(other) => {
            return Err((
                format!("compression={other}: expected gzip, zstd or uncompressed"),
                false,
            ));
        }
    };
    let forced = match force.map(|text| (text, parse_go_bool(text))) {
        None => false,
        Some((_, Some(forced))) => forced,
        Some((text, None)) => {
            return Err((
                format!("force-compression={text}: expected true or false"),
                false,
            ));
        }
    };
    if let Some(text) = level {
        let Ok(number) = text.parse::<i64>() else {
            return Err((
                format!("compression-level={text}: expected an integer"),
                false,
            ));
        };
        let algorithm = chosen.unwrap_or_default().algorithm();
        let leveled = Compression::with_level(algorithm, number)
            .map_err(|error| (error.to_string(), false))?;
        chosen = Some(leveled);
    }
    if forced && chosen.is_none() {
        chosen = Some(Compression::default());
    }
    Ok((chosen, forced))
}

/// Keys of a registry cache export.
const REGISTRY_TO_KEYS: &[&str] = &[
    "ref",
    "mode",
    "image-manifest",
    "oci-mediatypes",
    "compression",
    "compression-level",
    "force-compression",
    "ignore-error",
    "registry.insecure",
];
/// Keys of a local cache export.
const LOCAL_TO_KEYS: &[&str] = &[
    "dest",
    "mode",
    "tag",
    "image-manifest",
    "oci-mediatypes",
    "compression",
    "compression-level",
    "force-compression",
    "ignore-error",
];

impl CacheExport {
    /// Parses a `--cache-to` value: `type=registry,ref=REF` or `type=local,dest=DIR[,tag=T]`,
    /// with buildx's other keys (`mode`, `image-manifest`, `oci-mediatypes`, `compression`,
    /// `compression-level`, `force-compression`, `ignore-error`).
    ///
    /// # Errors
    /// [`CacheSpecError`] naming the problem; a value xbuild cannot write yet
    /// (`force-compression=true`, ...) is refused as unsupported.
    pub fn parse(spec: &str) -> Result<Self, CacheSpecError> {
        const FLAG: &str = "--cache-to";
        let (kind, pairs) = pairs(FLAG, spec, false)?;
        let error = |reason: String, unsupported: bool| CacheSpecError {
            flag: FLAG,
            spec: spec.to_owned(),
            reason,
            unsupported,
        };
        let missing = |what: &str| error(format!("type={kind} needs {what}"), false);
        let location = if kind == "registry" {
            check_keys(FLAG, spec, &pairs, REGISTRY_TO_KEYS)?;
            registry_ref(
                FLAG,
                spec,
                value(&pairs, "ref").ok_or_else(|| missing("ref=REGISTRY/REPOSITORY:TAG"))?,
                insecure(FLAG, spec, &pairs)?,
            )?
        } else {
            check_keys(FLAG, spec, &pairs, LOCAL_TO_KEYS)?;
            CacheLocation::Local(LocalCache {
                dir: PathBuf::from(value(&pairs, "dest").ok_or_else(|| missing("dest=DIR"))?),
                tag: local_tag(FLAG, spec, &pairs)?,
                digest: None,
            })
        };
        let mode = match value(&pairs, "mode") {
            None | Some("min") => CacheMode::Min,
            Some("max") => CacheMode::Max,
            Some(other) => {
                return Err(error(format!("mode={other}: expected min or max"), false));
            }
        };
        let oci_mediatypes = bool_key(FLAG, spec, &pairs, "oci-mediatypes")?.unwrap_or(true);
        let image_manifest = bool_key(FLAG, spec, &pairs, "image-manifest")?.unwrap_or(false);
        if !oci_mediatypes && image_manifest {
            return Err(error(
                "OCI mediatypes are required for image-manifest cache format \
                 (oci-mediatypes=false with image-manifest=true)"
                    .to_owned(),
                false,
            ));
        }
        let (compression, force_compression) = layer_compression(
            pairs
                .iter()
                .rev()
                .find(|(k, _)| *k == "compression")
                .map(|(_, v)| *v),
            value(&pairs, "compression-level"),
            pairs
                .iter()
                .rev()
                .find(|(k, _)| *k == "force-compression")
                .map(|(_, v)| *v),
        )
        .map_err(|(reason, unsupported)| error(reason, unsupported))?;
        Ok(Self {
            location,
            mode,
            ignore_error: bool_key(FLAG, spec, &pairs, "ignore-error")?.unwrap_or(false),
            image_manifest,
            compression,
            force_compression,
            docker_types: !oci_mediatypes,
        })
    }
}

/// `tag=` of a local cache (default `latest`); a name `index.json` can hold.
fn local_tag(
    flag: &'static str,
    spec: &str,
    pairs: &[(&str, &str)],
) -> Result<String, CacheSpecError> {
    let tag = value(pairs, "tag").unwrap_or(super::LOCAL_REF_NAME);
    let valid = tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(tag.to_owned())
    } else {
        Err(CacheSpecError {
            flag,
            spec: spec.to_owned(),
            reason: format!("tag={tag}: expected a tag ([A-Za-z0-9_.-], at most 128 characters)"),
            unsupported: false,
        })
    }
}

impl CacheLocation {
    /// Parses a `--cache-from` value: `type=registry,ref=REF`,
    /// `type=local,src=DIR[,tag=T|digest=sha256:...]`, or a bare reference.
    ///
    /// # Errors
    /// [`CacheSpecError`] naming the problem.
    pub fn parse_from(spec: &str) -> Result<Self, CacheSpecError> {
        const FLAG: &str = "--cache-from";
        if !spec.contains('=') {
            return registry_ref(FLAG, spec, spec, false);
        }
        let (kind, pairs) = pairs(FLAG, spec, false)?;
        let error = |reason: String, unsupported: bool| CacheSpecError {
            flag: FLAG,
            spec: spec.to_owned(),
            reason,
            unsupported,
        };
        let missing = |what: &str| error(format!("type={kind} needs {what}"), false);
        if kind == "registry" {
            check_keys(FLAG, spec, &pairs, &["ref", "registry.insecure"])?;
            registry_ref(
                FLAG,
                spec,
                value(&pairs, "ref").ok_or_else(|| missing("ref=REGISTRY/REPOSITORY:TAG"))?,
                insecure(FLAG, spec, &pairs)?,
            )
        } else {
            if value(&pairs, "ref").is_some() {
                // Docker's local cache page imports with `type=local,ref=DIR,digest=...`;
                // BuildKit's local cache reads no `ref`.
                return Err(error(
                    "unknown key ref (known: src, tag, digest): the directory is src=DIR"
                        .to_owned(),
                    false,
                ));
            }
            check_keys(FLAG, spec, &pairs, &["src", "tag", "digest"])?;
            let digest = value(&pairs, "digest")
                .map(|text| {
                    text.parse::<oci_spec::image::Digest>()
                        .map(|digest| digest.to_string())
                        .map_err(|_| {
                            error(
                                format!("digest={text}: expected sha256:<64 hex digits>"),
                                false,
                            )
                        })
                })
                .transpose()?;
            Ok(Self::Local(LocalCache {
                dir: PathBuf::from(value(&pairs, "src").ok_or_else(|| missing("src=DIR"))?),
                tag: local_tag(FLAG, spec, &pairs)?,
                digest,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_to_specs() {
        let export =
            CacheExport::parse("type=registry,ref=127.0.0.1:5000/app:cache,mode=max").unwrap();
        assert_eq!(export.mode, CacheMode::Max);
        assert!(
            matches!(export.location, CacheLocation::Registry(r) if r.reference.repository() == "app" && !r.insecure)
        );
        let export = CacheExport::parse("type=local,dest=/tmp/c").unwrap();
        assert_eq!(
            export,
            CacheExport::new(CacheLocation::local("/tmp/c"), CacheMode::Min)
        );
        for (bad, reason) in [
            ("type=registry", "needs ref="),
            ("type=local,src=/x", "unknown key src"),
            ("type=registry,ref=a/b,mode=all", "mode=all"),
            ("type=gha", "not supported yet"),
            ("type=ftp,dest=x", "unknown type"),
            ("ref=a/b", "no type="),
        ] {
            let error = CacheExport::parse(bad).unwrap_err();
            assert!(error.to_string().contains(reason), "{bad}: {error}");
        }
        assert!(!CacheExport::parse("type=inline").unwrap_err().unsupported);
    }

    #[test]
    fn inline_cache_to_specs() {
        let specs = |list: &[&str]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
        let (exports, inline) =
            CacheOptions::parse_to(&specs(&["type=inline", "type=local,dest=d"])).unwrap();
        assert!(inline);
        assert_eq!(
            exports,
            [CacheExport::new(CacheLocation::local("d"), CacheMode::Min)]
        );
        assert!(
            CacheOptions::parse_to(&specs(&["type=inline,mode=min"]))
                .unwrap()
                .1
        );
        assert!(
            !CacheOptions::parse_to(&specs(&["type=local,dest=d"]))
                .unwrap()
                .1
        );
        for (bad, reason) in [
            (
                "type=inline,mode=max",
                "mode=max: an inline cache holds the image's own",
            ),
            ("type=inline,ref=a/b", "unknown key ref (known: mode)"),
            ("type=gha", "type=gha is not supported yet"),
        ] {
            let error = CacheOptions::parse_to(&specs(&[bad])).unwrap_err();
            assert!(error.to_string().contains(reason), "{bad}: {error}");
        }
        let error = CacheLocation::parse_from("type=inline").unwrap_err();
        assert!(
            error.to_string().contains("type=inline is for --cache-to"),
            "{error}"
        );
    }

    /// buildx's `--cache-to=user/app:cache`: a bare reference is a registry cache.
    #[test]
    fn a_bare_cache_to_reference_is_a_registry_cache() {
        let (exports, inline) =
            CacheOptions::parse_to(&["127.0.0.1:5000/app:cache".to_owned()]).unwrap();
        assert!(!inline);
        let [export] = &exports[..] else {
            panic!("one export: {exports:?}")
        };
        assert_eq!(export.mode, CacheMode::Min);
        assert!(
            matches!(&export.location, CacheLocation::Registry(r) if r.reference.repository() == "app" && r.reference.tag() == Some("cache")),
            "{export:?}"
        );
        assert!(CacheOptions::parse_to(&["Bad Ref".to_owned()]).is_err());
    }

    /// Docker's local cache page writes `type=local,ref=DIR`: refused, naming `src=`.
    #[test]
    fn a_local_cache_from_with_ref_names_src() {
        let error = CacheLocation::parse_from("type=local,ref=dir,digest=sha256:00").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unknown key ref (known: src, tag, digest): the directory is src=DIR"),
            "{error}"
        );
    }

    #[test]
    fn cache_from_specs() {
        assert!(matches!(
            CacheLocation::parse_from("127.0.0.1:5000/app:cache").unwrap(),
            CacheLocation::Registry(r) if r.reference.tag() == Some("cache") && !r.insecure
        ));
        assert!(matches!(
            CacheLocation::parse_from("type=registry,ref=127.0.0.1:5000/app:cache,registry.insecure=true").unwrap(),
            CacheLocation::Registry(r) if r.insecure
        ));
        assert!(
            CacheLocation::parse_from("type=registry,ref=a/b,registry.insecure=maybe").is_err()
        );
        assert_eq!(
            CacheLocation::parse_from("type=local,src=dir").unwrap(),
            CacheLocation::local("dir")
        );
        assert!(CacheLocation::parse_from("type=local,dest=dir").is_err());
        assert!(CacheLocation::parse_from("type=registry,ref=a/b,mode=max").is_err());
    }

    #[test]
    fn cache_to_keys_have_buildx_meanings() {
        let export = CacheExport::parse(
            "type=local,dest=d,tag=v2,mode=max,ignore-error=true,image-manifest=true,\
             oci-mediatypes=true,compression=zstd,compression-level=3,force-compression=false",
        )
        .unwrap();
        assert_eq!(
            export,
            CacheExport {
                location: CacheLocation::Local(LocalCache {
                    dir: PathBuf::from("d"),
                    tag: "v2".to_owned(),
                    digest: None,
                }),
                mode: CacheMode::Max,
                ignore_error: true,
                image_manifest: true,
                compression: Some(Compression::Zstd),
                force_compression: false,
                docker_types: false,
            }
        );
        let export = CacheExport::parse(
            "type=registry,ref=r/a:c,ignore-error=false,image-manifest=false,\
             compression=uncompressed,registry.insecure=false",
        )
        .unwrap();
        assert!(!export.ignore_error && !export.image_manifest);
        assert!(matches!(export.location, CacheLocation::Registry(r) if !r.insecure));
        assert_eq!(export.compression, Some(Compression::None));
        let export = CacheExport::parse("type=registry,ref=r/a:c,registry.insecure=true").unwrap();
        assert!(matches!(export.location, CacheLocation::Registry(r) if r.insecure));
        assert_eq!(
            CacheExport::parse("type=registry,ref=r/a:c,compression=gzip,compression-level=6")
                .unwrap()
                .compression,
            Some(Compression::Gzip)
        );
    }

    /// `compression-level` and `force-compression` as BuildKit reads them: the level of
    /// the chosen algorithm (gzip when none is named), force with an empty value too.
    #[test]
    fn cache_compression_keys_give_the_level_and_force() {
        let parse = |spec: &str| {
            let export = CacheExport::parse(spec).unwrap();
            (export.compression, export.force_compression)
        };
        let gzip = |level| Compression::with_level(crate::layer::Algorithm::Gzip, level).unwrap();
        let zstd = |level| Compression::with_level(crate::layer::Algorithm::Zstd, level).unwrap();
        for level in 0..=9 {
            assert_eq!(
                parse(&format!("type=local,dest=d,compression-level={level}")),
                (Some(gzip(level)), false)
            );
        }
        assert_eq!(
            parse("type=local,dest=d,compression=zstd,compression-level=19"),
            (Some(zstd(19)), false)
        );
        assert_ne!(zstd(19), Compression::Zstd);
        assert_eq!(
            parse("type=local,dest=d,compression=zstd,compression-level=-3,force-compression="),
            (Some(zstd(-3)), true)
        );
        // zstd's 0 is its default level.
        assert_eq!(
            parse("type=local,dest=d,compression=zstd,compression-level=0"),
            (Some(Compression::Zstd), false)
        );
        assert_eq!(
            parse("type=registry,ref=r/a:c,force-compression=true"),
            (Some(Compression::Gzip), true)
        );
        assert_eq!(
            parse("type=registry,ref=r/a:c,compression=zstd,force-compression=false"),
            (Some(Compression::Zstd), false)
        );
        assert_eq!(parse("type=registry,ref=r/a:c"), (None, false));
    }

    #[test]
    fn oci_mediatypes_false_asks_for_docker_types() {
        let export = CacheExport::parse("type=registry,ref=r/app:c,oci-mediatypes=false").unwrap();
        assert!(export.docker_types);
        let export = CacheExport::parse("type=local,dest=d,oci-mediatypes=true").unwrap();
        assert!(!export.docker_types);
        assert!(
            !CacheExport::parse("type=local,dest=d")
                .unwrap()
                .docker_types
        );
    }

    #[test]
    fn cache_keys_xbuild_cannot_honour_are_refused() {
        for (bad, reason, unsupported) in [
            (
                "type=local,dest=d,oci-mediatypes=false,image-manifest=true",
                "OCI mediatypes are required for image-manifest cache format",
                false,
            ),
            (
                "type=local,dest=d,ignore-error=maybe",
                "ignore-error=maybe: expected true or false",
                false,
            ),
            (
                "type=local,dest=d,image-manifest=yes",
                "image-manifest=yes",
                false,
            ),
            (
                "type=local,dest=d,compression=estargz",
                "compression=estargz is not supported yet",
                true,
            ),
            (
                "type=local,dest=d,compression=lz4",
                "compression=lz4: expected gzip, zstd or uncompressed",
                false,
            ),
            (
                "type=local,dest=d,compression=zstd,compression-level=23",
                "compression-level=23: zstd takes -131072 to 22",
                false,
            ),
            (
                "type=local,dest=d,compression-level=10",
                "compression-level=10: gzip takes 0 to 9",
                false,
            ),
            (
                "type=local,dest=d,compression=uncompressed,compression-level=1",
                "compression-level=1: uncompressed layers have no level",
                false,
            ),
            (
                "type=local,dest=d,compression-level=x",
                "compression-level=x: expected an integer",
                false,
            ),
            (
                "type=local,dest=d,force-compression=maybe",
                "force-compression=maybe: expected true or false",
                false,
            ),
            (
                "type=registry,ref=r/a,registry.insecure=maybe",
                "registry.insecure=maybe: expected true or false",
                false,
            ),
            (
                "type=local,dest=d,tag=a/b",
                "tag=a/b: expected a tag",
                false,
            ),
            (
                "type=local,dest=d,ref=x",
                "unknown key ref (known: dest, mode, tag, image-manifest",
                false,
            ),
            (
                "type=registry,ref=r/a,dest=x",
                "unknown key dest (known: ref, mode, image-manifest",
                false,
            ),
        ] {
            let error = CacheExport::parse(bad).unwrap_err();
            assert!(error.to_string().contains(reason), "{bad}: {error}");
            assert_eq!(error.unsupported, unsupported, "{bad}");
        }
    }

    #[test]
    fn cache_from_local_tag_and_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            CacheLocation::parse_from(&format!("type=local,src=d,digest={digest}")).unwrap(),
            CacheLocation::Local(LocalCache {
                dir: PathBuf::from("d"),
                tag: "latest".to_owned(),
                digest: Some(digest),
            })
        );
        assert_eq!(
            CacheLocation::parse_from("type=local,src=d,tag=v2").unwrap(),
            CacheLocation::Local(LocalCache {
                dir: PathBuf::from("d"),
                tag: "v2".to_owned(),
                digest: None,
            })
        );
        let error = CacheLocation::parse_from("type=local,src=d,digest=abc").unwrap_err();
        assert!(
            error.to_string().contains("digest=abc: expected sha256:"),
            "{error}"
        );
        let error = CacheLocation::parse_from("type=local,src=d,mode=max").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unknown key mode (known: src, tag, digest)"),
            "{error}"
        );
    }
}
