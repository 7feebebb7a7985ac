//! Image references, parsed and normalised as Docker does: `alpine` →
//! `docker.io/library/alpine:latest`, `localhost:5000/a/b:t`, `name@sha256:...`,
//! `name:tag@sha256:...`.
//!
//! Parsing is oci-spec's `distribution::Reference` (the regular expression and the domain
//! split of Docker's `reference/normalize.go`), through `oci::reference::parse`, which gives
//! the same result without compiling the expression for plain ASCII references; this module
//! adds the checks Docker makes on
//! top (lower-case repository) and the names xbuild uses: the full normalised form names an
//! image in the local store.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::Digest;

pub use crate::oci::reference::DOCKER_HUB;
use crate::oci::reference::DOCKER_HUB_LEGACY;
/// The host that serves Docker Hub's registry API.
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// A malformed image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    /// What the user wrote.
    pub input: String,
    /// Why it is refused.
    pub reason: String,
}

/// A normalised image reference: registry, repository, and a tag and/or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses a reference the way `docker pull` does.
    ///
    /// # Errors
    /// [`ReferenceError`] for an empty, malformed or upper-case name, or a bad digest.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let error = |reason: String| ReferenceError {
            input: input.to_owned(),
            reason,
        };
        let parsed = crate::oci::reference::parse(input).map_err(|e| error(e.to_string()))?;
        if parsed.repository().chars().any(|c| c.is_ascii_uppercase()) {
            return Err(error("repository names must be lowercase".to_owned()));
        }
        let digest = parsed
            .digest()
            .map(|digest| Digest::from_str(digest).map_err(|e| error(format!("bad digest: {e}"))))
            .transpose()?;
        // oci-spec adds `latest` only when there is neither a tag nor a digest, as Docker.
        Ok(Self {
            registry: parsed.registry().to_owned(),
            repository: parsed.repository().to_owned(),
            tag: parsed.tag().map(str::to_owned),
            digest,
        })
    }

    /// The registry as users name it (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) that serves the registry API: `registry-1.docker.io` for Docker
    /// Hub, the registry name otherwise.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// The repository path (`library/alpine`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry's manifest endpoint for: the digest when there is one (it
    /// pins the content), else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn repository_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository with this digest (and no tag).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// The name under which the image is kept in the local store: the full normalised
    /// reference (`docker.io/library/alpine:latest`, `127.0.0.1:5000/a@sha256:...`).
    pub fn store_name(&self) -> String {
        self.to_string()
    }
}

/// The host serving the registry API for a registry name.
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB || registry == DOCKER_HUB_LEGACY {
        DOCKER_HUB_API_HOST
    } else {
        registry
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Self::parse(input)
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[rstest]
    #[case("alpine", "docker.io/library/alpine:latest")]
    #[case("alpine:3.20", "docker.io/library/alpine:3.20")]
    #[case("docker.io/alpine", "docker.io/library/alpine:latest")]
    #[case("index.docker.io/library/alpine", "docker.io/library/alpine:latest")]
    #[case("user/app:v1", "docker.io/user/app:v1")]
    #[case("localhost:5000/a/b:t", "localhost:5000/a/b:t")]
    #[case("localhost/a", "localhost/a:latest")]
    #[case("127.0.0.1:5000/busybox", "127.0.0.1:5000/busybox:latest")]
    #[case("ghcr.io/o/r/x:1.0", "ghcr.io/o/r/x:1.0")]
    fn references_normalise_like_docker(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(ImageRef::parse(input).unwrap().to_string(), expected);
    }

    #[test]
    fn digests_pin_the_manifest() {
        let by_digest = ImageRef::parse(&format!("alpine@{DIGEST}")).unwrap();
        assert_eq!(by_digest.tag(), None);
        assert_eq!(by_digest.manifest_reference(), DIGEST);
        assert_eq!(
            by_digest.to_string(),
            format!("docker.io/library/alpine@{DIGEST}")
        );
        let both = ImageRef::parse(&format!("localhost:5000/a:t@{DIGEST}")).unwrap();
        assert_eq!(both.tag(), Some("t"));
        assert_eq!(both.manifest_reference(), DIGEST);
        assert_eq!(both.registry(), "localhost:5000");
        assert_eq!(both.repository(), "a");
    }

    #[test]
    fn docker_hub_is_served_by_its_api_host() {
        assert_eq!(
            ImageRef::parse("alpine").unwrap().api_host(),
            "registry-1.docker.io"
        );
        assert_eq!(
            ImageRef::parse("127.0.0.1:1/a").unwrap().api_host(),
            "127.0.0.1:1"
        );
    }

    #[rstest]
    #[case("")]
    #[case("Alpine")]
    #[case("a b")]
    #[case("alpine:")]
    #[case("alpine@sha256:abc")]
    #[case("alpine@md5:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")]
    #[case("localhost:5000/Upper/case")]
    #[case("/alpine")]
    #[case("alpine:-tag")]
    fn malformed_references_are_refused(#[case] input: &str) {
        let error = ImageRef::parse(input).unwrap_err();
        assert!(
            error.to_string().contains("invalid image reference"),
            "{error}"
        );
    }
}
