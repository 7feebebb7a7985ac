//! `--cache-to` and `--cache-from` specs in buildx's syntax: comma-separated `key=value`
//! pairs (`type=registry,ref=REG/app:buildcache,mode=max`, `type=local,dest=DIR`), or for
//! `--cache-from` a bare reference meaning `type=registry,ref=...`.

use std::path::PathBuf;

use crate::registry::ImageRef;

/// Where a cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// An image reference in a registry (`type=registry,ref=...`).
    Registry(ImageRef),
    /// An OCI image layout directory (`type=local,dest=DIR` / `src=DIR`).
    Local(PathBuf),
}

impl std::fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Registry(reference) => write!(f, "{reference}"),
            Self::Local(dir) => write!(f, "{}", dir.display()),
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

/// buildx keys that mean nothing for our format (always OCI, always an image manifest).
const IGNORED_KEYS: &[&str] = &["oci-mediatypes", "image-manifest", "ignore-error"];

/// `key=value` pairs of a spec, in order.
type Pairs<'a> = Vec<(&'a str, &'a str)>;

fn pairs<'a>(flag: &'static str, spec: &'a str) -> Result<(String, Pairs<'a>), CacheSpecError> {
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
        "inline" | "gha" | "s3" | "azblob" => Err(CacheSpecError {
            flag,
            spec: spec.to_owned(),
            reason: format!("type={kind} is not supported yet (use registry or local)"),
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
) -> Result<CacheLocation, CacheSpecError> {
    ImageRef::parse(text)
        .map(CacheLocation::Registry)
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
        if !known.contains(key) && !IGNORED_KEYS.contains(key) {
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

impl CacheExport {
    /// Parses a `--cache-to` value: `type=registry,ref=REF[,mode=min|max]` or
    /// `type=local,dest=DIR[,mode=min|max]`.
    ///
    /// # Errors
    /// [`CacheSpecError`] naming the problem.
    pub fn parse(spec: &str) -> Result<Self, CacheSpecError> {
        const FLAG: &str = "--cache-to";
        let (kind, pairs) = pairs(FLAG, spec)?;
        let missing = |what: &str| CacheSpecError {
            flag: FLAG,
            spec: spec.to_owned(),
            reason: format!("type={kind} needs {what}"),
            unsupported: false,
        };
        let location = if kind == "registry" {
            check_keys(FLAG, spec, &pairs, &["ref", "mode"])?;
            registry_ref(
                FLAG,
                spec,
                value(&pairs, "ref").ok_or_else(|| missing("ref=REGISTRY/REPOSITORY:TAG"))?,
            )?
        } else {
            check_keys(FLAG, spec, &pairs, &["dest", "mode"])?;
            CacheLocation::Local(PathBuf::from(
                value(&pairs, "dest").ok_or_else(|| missing("dest=DIR"))?,
            ))
        };
        let mode = match value(&pairs, "mode") {
            None | Some("min") => CacheMode::Min,
            Some("max") => CacheMode::Max,
            Some(other) => {
                return Err(CacheSpecError {
                    flag: FLAG,
                    spec: spec.to_owned(),
                    reason: format!("mode={other}: expected min or max"),
                    unsupported: false,
                });
            }
        };
        Ok(Self { location, mode })
    }
}

impl CacheLocation {
    /// Parses a `--cache-from` value: `type=registry,ref=REF`, `type=local,src=DIR`, or a
    /// bare reference.
    ///
    /// # Errors
    /// [`CacheSpecError`] naming the problem.
    pub fn parse_from(spec: &str) -> Result<Self, CacheSpecError> {
        const FLAG: &str = "--cache-from";
        if !spec.contains('=') {
            return registry_ref(FLAG, spec, spec);
        }
        let (kind, pairs) = pairs(FLAG, spec)?;
        let missing = |what: &str| CacheSpecError {
            flag: FLAG,
            spec: spec.to_owned(),
            reason: format!("type={kind} needs {what}"),
            unsupported: false,
        };
        if kind == "registry" {
            check_keys(FLAG, spec, &pairs, &["ref"])?;
            registry_ref(
                FLAG,
                spec,
                value(&pairs, "ref").ok_or_else(|| missing("ref=REGISTRY/REPOSITORY:TAG"))?,
            )
        } else {
            check_keys(FLAG, spec, &pairs, &["src"])?;
            Ok(Self::Local(PathBuf::from(
                value(&pairs, "src").ok_or_else(|| missing("src=DIR"))?,
            )))
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
        assert!(matches!(export.location, CacheLocation::Registry(r) if r.repository() == "app"));
        let export = CacheExport::parse("type=local,dest=/tmp/c").unwrap();
        assert_eq!(
            export,
            CacheExport {
                location: CacheLocation::Local(PathBuf::from("/tmp/c")),
                mode: CacheMode::Min
            }
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
        assert!(CacheExport::parse("type=inline").unwrap_err().unsupported);
    }

    #[test]
    fn cache_from_specs() {
        assert!(matches!(
            CacheLocation::parse_from("127.0.0.1:5000/app:cache").unwrap(),
            CacheLocation::Registry(r) if r.tag() == Some("cache")
        ));
        assert_eq!(
            CacheLocation::parse_from("type=local,src=dir").unwrap(),
            CacheLocation::Local(PathBuf::from("dir"))
        );
        assert!(CacheLocation::parse_from("type=local,dest=dir").is_err());
        assert!(CacheLocation::parse_from("type=registry,ref=a/b,mode=max").is_err());
    }
}
