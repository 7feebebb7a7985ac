//! What a build read from outside its Dockerfile, per target platform: the images it
//! resolved (`FROM`, `COPY --from=image`, `RUN --mount=from=image`, `--build-context`
//! images and OCI layouts) with the digest each resolved to, the URLs `ADD` fetched with the
//! digest of what came, the directories of `--build-context`, and the build context.
//! The provenance attestation lists them as its resolved dependencies.
//!
//! A step records what it reads when it reads it, for every target platform whose image
//! needs the step (a stage built once for all targets counts for each). Steps run side by
//! side, so the record is a set, read back sorted: the same inputs give the same list
//! whatever the order the steps ran in (attestation digests stay reproducible).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use super::error::ExecutorError;
use super::sources::ContextFiles;
use crate::plan::Vertex;
use crate::platform::Platform;

/// One thing a build read from outside.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Material {
    /// An image, as the Dockerfile names it after expansion, resolved for `platform`.
    Image {
        /// The reference as named (`debian:bookworm`).
        reference: String,
        /// The platform it was resolved for (a build-platform stage's differs from the
        /// target's).
        platform: Platform,
        /// The platform manifest's digest (`sha256:...`).
        digest: String,
    },
    /// A git repository `ADD` checked out.
    Git {
        /// The remote, as `git` fetches it.
        url: String,
        /// The commit checked out (full hex).
        commit: String,
    },
    /// A file `ADD` fetched over HTTP(S).
    Http {
        /// The URL.
        url: String,
        /// The digest of what was fetched (`sha256:...`).
        digest: String,
    },
    /// A local directory given as `--build-context NAME=DIR`, by its digest after its
    /// `.dockerignore` (as the build context's).
    Context {
        /// The context's name.
        name: String,
        /// The digest of its files (`sha256:...`).
        digest: String,
    },
}

/// The materials of one build, as steps record them.
#[derive(Default)]
pub(crate) struct Materials {
    by_target: Mutex<BTreeMap<Platform, BTreeSet<Material>>>,
}

impl Materials {
    /// Records that `vertex` read `material`, for every target that needs it.
    pub(crate) fn record(&self, vertex: &Vertex, material: &Material) {
        let mut by_target = self
            .by_target
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for target in &vertex.needed_by {
            by_target
                .entry(target.clone())
                .or_default()
                .insert(material.clone());
        }
    }

    /// Everything recorded, per target platform, sorted.
    pub(crate) fn take(&self) -> BTreeMap<Platform, Vec<Material>> {
        std::mem::take(
            &mut *self
                .by_target
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
        .into_iter()
        .map(|(target, set)| (target, set.into_iter().collect()))
        .collect()
    }
}

/// The build context as the build saw it (after `.dockerignore`), when a step read it.
#[derive(Clone)]
pub struct ContextRead {
    files: Arc<ContextFiles>,
}

impl std::fmt::Debug for ContextRead {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ContextRead")
            .field("dir", &self.files.dir)
            .finish_non_exhaustive()
    }
}

impl ContextRead {
    pub(crate) fn new(files: Arc<ContextFiles>) -> Self {
        Self { files }
    }

    /// The context's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.files.dir
    }

    /// The digest of the whole context after `.dockerignore` (`sha256:...`): every entry's
    /// path, kind, mode and content, as [`crate::context::digest_entries`] defines it. Files
    /// whose size and times are unchanged since the build's own read are not read again.
    ///
    /// # Errors
    /// A file cannot be read.
    pub fn digest(&self) -> Result<String, ExecutorError> {
        self.files.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Op;

    fn vertex(needed_by: &[&str]) -> Vertex {
        Vertex {
            id: "v".to_owned(),
            platform: "linux/amd64".parse().unwrap(),
            stage: 0,
            stage_name: None,
            step: 1,
            steps: 1,
            label: String::new(),
            op: Op::Scratch,
            parent: None,
            inputs: Vec::new(),
            needed_by: needed_by.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    fn image(reference: &str, digest: &str) -> Material {
        Material::Image {
            reference: reference.to_owned(),
            platform: "linux/amd64".parse().unwrap(),
            digest: digest.to_owned(),
        }
    }

    #[test]
    fn each_target_gets_what_its_steps_read_sorted_and_once() {
        let materials = Materials::default();
        let shared = vertex(&["linux/amd64", "linux/arm64"]);
        let arm = vertex(&["linux/arm64"]);
        materials.record(&arm, &image("z", "sha256:2"));
        materials.record(&shared, &image("a", "sha256:1"));
        materials.record(&shared, &image("a", "sha256:1"));
        let taken = materials.take();
        let amd64: Platform = "linux/amd64".parse().unwrap();
        let arm64: Platform = "linux/arm64".parse().unwrap();
        assert_eq!(taken[&amd64], vec![image("a", "sha256:1")]);
        assert_eq!(
            taken[&arm64],
            vec![image("a", "sha256:1"), image("z", "sha256:2")]
        );
    }
}
