//! `-o`/`--output` specs in buildx's syntax: comma-separated `key=value` pairs
//! (`type=oci,dest=x.tar`), or a bare path meaning `type=local,dest=PATH` (`-` alone: a tar
//! of the root filesystem on stdout, as buildx takes it).

use std::path::PathBuf;

use super::Output;

/// A `-o` spec xbuild does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("output \"{spec}\": {reason}")]
pub struct OutputSpecError {
    /// What the user wrote.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Keys each type accepts besides `type` (buildx's names).
fn known_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "oci" | "docker" => &["dest", "name"],
        "local" | "tar" => &["dest"],
        "registry" => &["push-by-digest", "name", "push"],
        "image" => &["push", "push-by-digest", "name"],
        _ => &[],
    }
}

fn parse_bool(spec: &str, key: &str, value: &str) -> Result<bool, OutputSpecError> {
    match value {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(OutputSpecError {
            spec: spec.to_owned(),
            reason: format!("{key}={value}: expected true or false"),
        }),
    }
}

impl Output {
    /// Parses one `-o` value: `type=oci,dest=x.tar`, `type=docker[,dest=x.tar]` (without
    /// `dest`: load into the Docker engine, as `--load`), `type=local,dest=dir`,
    /// `type=tar,dest=x.tar`, `type=registry[,push-by-digest=true]`, `type=image,push=true`
    /// (`type=image` without `push=true` names the image in the local store), or a bare path
    /// (`type=local`; `-` is `type=tar` to stdout).
    ///
    /// # Errors
    /// [`OutputSpecError`] naming unknown types and keys, a missing `dest`, or a `name=`
    /// (the names come from `-t`; `name=` is not supported yet).
    pub fn parse(spec: &str) -> Result<Self, OutputSpecError> {
        let error = |reason: String| OutputSpecError {
            spec: spec.to_owned(),
            reason,
        };
        if spec.is_empty() {
            return Err(error("empty output spec".to_owned()));
        }
        if !spec.contains('=') {
            return Ok(if spec == "-" {
                Self::Tar {
                    dest: PathBuf::from("-"),
                }
            } else {
                Self::Local {
                    dest: PathBuf::from(spec),
                }
            });
        }
        let mut kind = None;
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for part in spec.split(',') {
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
                "no type= (expected type=oci|docker|local|tar|registry|image)".to_owned(),
            ));
        };
        if known_keys(kind).is_empty() {
            return Err(error(format!(
                "unknown type \"{kind}\" (expected oci, docker, local, tar, registry or image)"
            )));
        }
        let unknown: Vec<&str> = pairs
            .iter()
            .map(|(key, _)| *key)
            .filter(|key| !known_keys(kind).contains(key))
            .collect();
        if !unknown.is_empty() {
            return Err(error(format!(
                "unknown key{} {} for type={kind} (known: {})",
                if unknown.len() == 1 { "" } else { "s" },
                unknown.join(", "),
                known_keys(kind).join(", ")
            )));
        }
        if pairs.iter().any(|(key, _)| *key == "name") && !matches!(kind, "registry" | "image") {
            return Err(error(
                "name= is not supported yet: name the image with -t".to_owned(),
            ));
        }
        let value = |wanted: &str| {
            pairs
                .iter()
                .rev()
                .find(|(key, _)| *key == wanted)
                .map(|(_, value)| *value)
        };
        let dest = || {
            value("dest")
                .filter(|dest| !dest.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| error(format!("type={kind} needs dest=PATH")))
        };
        let flag = |key: &str| value(key).map_or(Ok(false), |v| parse_bool(spec, key, v));
        Ok(match kind {
            "oci" => Self::Oci {
                dest: dest()?,
                referrers: true,
            },
            "docker" => Self::Docker {
                dest: value("dest").filter(|d| !d.is_empty()).map(PathBuf::from),
            },
            "local" => Self::Local { dest: dest()? },
            "tar" => Self::Tar { dest: dest()? },
            "registry" => {
                if value("push").is_some() && !flag("push")? {
                    return Err(error(
                        "type=registry always pushes (use type=image to keep it local)".to_owned(),
                    ));
                }
                Self::Registry {
                    by_digest: flag("push-by-digest")?,
                }
            }
            _ => {
                if flag("push")? {
                    Self::Registry {
                        by_digest: flag("push-by-digest")?,
                    }
                } else if flag("push-by-digest")? {
                    return Err(error("push-by-digest=true needs push=true".to_owned()));
                } else {
                    Self::Store
                }
            }
        })
    }
}

impl Output {
    /// The `name=` of a `-o type=registry|image` spec (buildx's way to name what is pushed,
    /// as `-o type=registry,name=REG/app,push-by-digest=true` in CI jobs); the caller adds
    /// it to the `-t` names.
    pub fn names(spec: &str) -> Vec<String> {
        if !spec.contains('=') {
            return Vec::new();
        }
        spec.split(',')
            .filter_map(|part| part.split_once('='))
            .filter(|(key, value)| key.trim() == "name" && !value.trim().is_empty())
            .map(|(_, value)| value.trim().trim_matches('"').to_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case("type=oci,dest=x.tar", Output::Oci { dest: "x.tar".into(), referrers: true })]
    #[case("type=docker,dest=x.tar", Output::Docker { dest: Some("x.tar".into()) })]
    #[case("type=docker", Output::Docker { dest: None })]
    #[case("type=local,dest=out", Output::Local { dest: "out".into() })]
    #[case("dest=out,type=local", Output::Local { dest: "out".into() })]
    #[case("out/dir", Output::Local { dest: "out/dir".into() })]
    #[case("-", Output::Tar { dest: "-".into() })]
    #[case("type=tar,dest=rootfs.tar", Output::Tar { dest: "rootfs.tar".into() })]
    #[case("type=tar,dest=-", Output::Tar { dest: "-".into() })]
    #[case("type=registry", Output::Registry { by_digest: false })]
    #[case("type=registry,push-by-digest=true", Output::Registry { by_digest: true })]
    #[case("type=image,push=true", Output::Registry { by_digest: false })]
    #[case("type=image,push=true,push-by-digest=true", Output::Registry { by_digest: true })]
    #[case("type=image", Output::Store)]
    #[case("type=image,push=false", Output::Store)]
    fn good_specs(#[case] spec: &str, #[case] expected: Output) {
        assert_eq!(Output::parse(spec), Ok(expected));
    }

    #[rstest]
    #[case(
        "type=oci,dest=x.tar,compression=zstd",
        "unknown key compression for type=oci"
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
    #[case("type=oci,dest=x.tar,name=x", "name= is not supported yet")]
    #[case("", "empty output spec")]
    fn bad_specs_name_what_is_wrong(#[case] spec: &str, #[case] fragment: &str) {
        let error = Output::parse(spec).expect_err("refused");
        assert!(error.to_string().contains(fragment), "{error}");
        assert!(error.to_string().contains(spec), "{error}");
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn registry_outputs_give_their_names() {
        assert_eq!(
            Output::names("type=registry,name=reg:5000/app,push-by-digest=true"),
            ["reg:5000/app"]
        );
        assert_eq!(
            Output::parse("type=image,name=reg/app,push=true").unwrap(),
            Output::Registry { by_digest: false }
        );
        assert!(Output::names("type=registry").is_empty());
        assert!(Output::names("out-dir").is_empty());
    }
}
