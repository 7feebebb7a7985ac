//! Annotations as buildx and BuildKit spell them: where one goes (the index, each manifest,
//! the manifest descriptors in the index, the index's descriptor in an OCI layout), for which
//! platforms, and its key and value.
//!
//! Two spellings are read: the flag form `[TYPE[PLATFORMS]:]KEY=VALUE` (`--annotation`,
//! `imagetools create --annotation`) and the output-key form
//! `annotation[-TYPE][PLATFORMS].KEY=VALUE` (`-o type=image,annotation-index.KEY=VALUE`).
//! `PLATFORMS` is `[linux/amd64,linux/arm64]`. This module parses and matches only; what a
//! command accepts is up to it.

use std::fmt;

use crate::platform::Platform;

/// Where an annotation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnnotationKind {
    /// The image index (`index`).
    Index,
    /// Each image manifest (`manifest`; the default of a build's `--annotation`).
    Manifest,
    /// Each manifest's descriptor inside the index (`manifest-descriptor`).
    ManifestDescriptor,
    /// The index's descriptor in an OCI layout's `index.json` (`index-descriptor`).
    IndexDescriptor,
}

impl AnnotationKind {
    /// Every kind, with its name.
    const NAMES: [(Self, &'static str); 4] = [
        (Self::Index, "index"),
        (Self::Manifest, "manifest"),
        (Self::ManifestDescriptor, "manifest-descriptor"),
        (Self::IndexDescriptor, "index-descriptor"),
    ];

    /// buildx's name of the kind.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(kind, _)| *kind == self)
            .map_or("manifest", |(_, name)| name)
    }

    fn parse(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(_, known)| *known == name)
            .map(|(kind, _)| *kind)
    }
}

impl fmt::Display for AnnotationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// Where it goes; `None` when no type was written (each command has its default).
    pub kind: Option<AnnotationKind>,
    /// The platforms it is for (empty: all).
    pub platforms: Vec<Platform>,
    /// The key (`org.opencontainers.image.description`).
    pub key: String,
    /// The value.
    pub value: String,
}

/// An annotation that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {input:?}: {reason}")]
pub struct AnnotationError {
    /// What was given.
    pub input: String,
    /// Why it is refused.
    pub reason: String,
}

impl Annotation {
    /// Whether it applies to a manifest of `platform` (`None`: the platform is not known).
    pub fn applies_to(&self, platform: Option<&Platform>) -> bool {
        self.platforms.is_empty()
            || platform.is_some_and(|platform| {
                self.platforms
                    .iter()
                    .any(|wanted| wanted.same_target(platform))
            })
    }

    /// Reads the flag form `[TYPE[PLATFORMS][,TYPE[PLATFORMS]...]:]KEY=VALUE`: one
    /// annotation per type, as buildx reads `--annotation "index,manifest:foo=bar"`.
    ///
    /// # Errors
    /// No `=`, an empty key, an unknown type or platform. A prefix that names no known type
    /// is part of the key (`com.example:x=1`) only when it is one word without platforms;
    /// in a list of types every one must be known.
    pub fn parse_flag(input: &str) -> Result<Vec<Self>, AnnotationError> {
        let error = |reason: String| AnnotationError {
            input: input.to_owned(),
            reason,
        };
        let (name, value) = input
            .split_once('=')
            .ok_or_else(|| error("expected KEY=VALUE".to_owned()))?;
        let annotation = |kind, platforms, key: &str| Self {
            kind,
            platforms,
            key: key.to_owned(),
            value: value.to_owned(),
        };
        // A type prefix ends at the first ':' before the key, unless that ':' is part of a
        // key without a type (keys such as `com.example:x` are rare; the type names are fixed).
        let Some((prefix, key)) = name.split_once(':') else {
            return Self::checked(input, vec![annotation(None, Vec::new(), name)]);
        };
        let parts = split_type_list(prefix);
        let mut annotations = Vec::new();
        for part in &parts {
            let (kind_name, platforms) = split_platforms(part).map_err(error)?;
            match AnnotationKind::parse(kind_name) {
                Some(kind) => annotations.push(annotation(Some(kind), platforms, key)),
                None if parts.len() == 1 && platforms.is_empty() => {
                    return Self::checked(input, vec![annotation(None, Vec::new(), name)]);
                }
                None => {
                    return Err(error(format!(
                        "unknown annotation type {kind_name:?} (known: {})",
                        known_kinds()
                    )));
                }
            }
        }
        Self::checked(input, annotations)
    }

    fn checked(input: &str, annotations: Vec<Self>) -> Result<Vec<Self>, AnnotationError> {
        if annotations
            .iter()
            .any(|annotation| annotation.key.is_empty())
        {
            return Err(AnnotationError {
                input: input.to_owned(),
                reason: "the key is empty".to_owned(),
            });
        }
        Ok(annotations)
    }

    /// Reads the output-key form: `name` is `annotation[-TYPE][PLATFORMS].KEY` (the part
    /// before the `=` of an `-o` entry); returns `None` when `name` is not an annotation key.
    ///
    /// # Errors
    /// An unknown type or platform, or an empty key.
    pub fn parse_output_key(name: &str, value: &str) -> Option<Result<Self, AnnotationError>> {
        let rest = name.strip_prefix("annotation")?;
        if !(rest.starts_with('.') || rest.starts_with('-') || rest.starts_with('[')) {
            return None;
        }
        let input = format!("{name}={value}");
        let error = |reason: String| AnnotationError {
            input: input.clone(),
            reason,
        };
        let parsed = (|| {
            let (head, key) = rest
                .split_once('.')
                .ok_or_else(|| error("expected annotation[-TYPE].KEY=VALUE".to_owned()))?;
            let (kind_part, platforms) = split_platforms(head).map_err(error)?;
            let kind = match kind_part {
                "" => None,
                _ => {
                    let kind_name = kind_part.strip_prefix('-').unwrap_or(kind_part);
                    Some(AnnotationKind::parse(kind_name).ok_or_else(|| {
                        error(format!(
                            "unknown annotation type {kind_name:?} (known: {})",
                            known_kinds()
                        ))
                    })?)
                }
            };
            if key.is_empty() {
                return Err(error("the key is empty".to_owned()));
            }
            Ok(Self {
                kind,
                platforms,
                key: key.to_owned(),
                value: value.to_owned(),
            })
        })();
        Some(parsed)
    }
}

fn known_kinds() -> String {
    AnnotationKind::NAMES
        .iter()
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `index,manifest[linux/amd64,linux/arm64]` → `index`, `manifest[linux/amd64,linux/arm64]`:
/// the commas inside a platform list do not split.
fn split_type_list(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (at, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// `type[linux/amd64,linux/arm64]` → (`type`, platforms).
fn split_platforms(text: &str) -> Result<(&str, Vec<Platform>), String> {
    let Some(open) = text.find('[') else {
        return Ok((text, Vec::new()));
    };
    let inner = text[open + 1..]
        .strip_suffix(']')
        .ok_or_else(|| "a platform list must end with ']'".to_owned())?;
    let platforms = inner
        .split(',')
        .map(|platform| Platform::parse(platform.trim()).map_err(|error| error.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((&text[..open], platforms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_form_reads_type_platforms_key_and_value() {
        let [a] = &Annotation::parse_flag("index:org.opencontainers.image.description=My app")
            .unwrap()[..]
        else {
            panic!("one annotation")
        };
        assert_eq!(a.kind, Some(AnnotationKind::Index));
        assert_eq!(a.key, "org.opencontainers.image.description");
        assert_eq!(a.value, "My app");
        let [a] = &Annotation::parse_flag("manifest-descriptor[linux/arm64,linux/amd64]:k=v=w")
            .unwrap()[..]
        else {
            panic!("one annotation")
        };
        assert_eq!(a.kind, Some(AnnotationKind::ManifestDescriptor));
        assert_eq!(a.platforms.len(), 2);
        assert_eq!(a.value, "v=w");
        assert!(a.applies_to(Some(&Platform::parse("linux/arm64").unwrap())));
        assert!(!a.applies_to(Some(&Platform::parse("linux/s390x").unwrap())));
        let [a] = &Annotation::parse_flag("plain=1").unwrap()[..] else {
            panic!("one annotation")
        };
        assert_eq!(a.kind, None);
        let [a] = &Annotation::parse_flag("com.example:x=1").unwrap()[..] else {
            panic!("one annotation")
        };
        assert_eq!((a.kind, a.key.as_str()), (None, "com.example:x"));
        assert!(Annotation::parse_flag("novalue").is_err());
        assert!(Annotation::parse_flag("bogus[linux/amd64]:k=v").is_err());
        assert!(Annotation::parse_flag("index:=v").is_err());
    }

    /// buildx's `--annotation "index,manifest,manifest-descriptor:foo=bar"`: one annotation
    /// per type, never a key named after the list.
    #[test]
    fn flag_form_reads_a_list_of_types() {
        let annotations = Annotation::parse_flag(
            "index,manifest[linux/amd64,linux/arm64],manifest-descriptor:foo=bar",
        )
        .unwrap();
        let kinds: Vec<_> = annotations.iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            [
                Some(AnnotationKind::Index),
                Some(AnnotationKind::Manifest),
                Some(AnnotationKind::ManifestDescriptor)
            ]
        );
        assert!(
            annotations
                .iter()
                .all(|a| a.key == "foo" && a.value == "bar")
        );
        assert_eq!(annotations[1].platforms.len(), 2);
        assert!(annotations[0].platforms.is_empty());
        let error = Annotation::parse_flag("index,bogus:foo=bar").unwrap_err();
        assert!(
            error.reason.contains("unknown annotation type \"bogus\""),
            "{error}"
        );
        assert!(Annotation::parse_flag("index,manifest:=bar").is_err());
    }

    #[test]
    fn output_key_form_reads_type_and_platforms() {
        let a = Annotation::parse_output_key("annotation-index.org.x", "1")
            .unwrap()
            .unwrap();
        assert_eq!(a.kind, Some(AnnotationKind::Index));
        assert_eq!(a.key, "org.x");
        let a = Annotation::parse_output_key("annotation-manifest[linux/arm64].k", "v")
            .unwrap()
            .unwrap();
        assert_eq!(a.kind, Some(AnnotationKind::Manifest));
        assert_eq!(a.platforms, [Platform::parse("linux/arm64").unwrap()]);
        let a = Annotation::parse_output_key("annotation.k", "v")
            .unwrap()
            .unwrap();
        assert_eq!(a.kind, None);
        assert!(Annotation::parse_output_key("annotations", "v").is_none());
        assert!(Annotation::parse_output_key("name", "v").is_none());
        assert!(
            Annotation::parse_output_key("annotation-bogus.k", "v")
                .unwrap()
                .is_err()
        );
    }
}
