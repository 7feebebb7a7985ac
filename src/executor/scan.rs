//! What an SBOM scans besides each target's image, as the Dockerfile's
//! `BUILDKIT_SBOM_SCAN_STAGE` / `BUILDKIT_SBOM_SCAN_CONTEXT` ask
//! ([`crate::dockerfile::sbomscan`]): the final file system of every stage the target's
//! image needed (not the target stage itself) that has stage scanning on, and the build
//! context when the target stage has context scanning on; with `--attest
//! type=sbom,scan-stage=true` ([`StageScan::Every`]) every stage the target needed. Found
//! after the graph ran, from the results, for a build that makes SBOMs (the pipeline scans
//! them).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::error::ExecutorError;
use super::services::Services;
use super::state::Results;
use crate::dockerfile::sbomscan;
use crate::plan::BuildGraph;
use crate::platform::Platform;

/// Which stages an SBOM scans besides the target's image (it goes to a build node as
/// `asked` or `every`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageScan {
    /// Those whose `BUILDKIT_SBOM_SCAN_STAGE` is on (and the context when the target's
    /// `BUILDKIT_SBOM_SCAN_CONTEXT` is).
    Asked,
    /// Every stage the target needed, as if each had `BUILDKIT_SBOM_SCAN_STAGE=true`
    /// (`--attest type=sbom,scan-stage=true`); the context as [`Self::Asked`].
    Every,
}

/// One more tree to scan for a target's SBOM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomExtra {
    /// `context`, or the stage's name (`stage-N` when it has none), as BuildKit names them
    /// (dockerfile2llb's `stageName`).
    pub name: String,
    /// Where its files are.
    pub root: ExtraRoot,
}

/// The files of an [`SbomExtra`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtraRoot {
    /// A stage's snapshot directories, top first (overlay `lowerdir=` order).
    Layers(Vec<PathBuf>),
    /// The build context directory (as it is on disk).
    Dir(PathBuf),
    /// A stage a build node built, scanned there (its files exist only there): the scan
    /// it sent back.
    Scanned(Box<crate::sbom::Scan>),
}

/// The extras of each target platform's image.
///
/// # Errors
/// A stage's layers cannot be made available (a lazily imported layer's fetch fails).
pub(crate) fn extras(
    graph: &BuildGraph,
    results: &Results,
    services: &Services<'_>,
    stages: StageScan,
) -> Result<BTreeMap<Platform, Vec<SbomExtra>>, ExecutorError> {
    let mut requests = sbomscan::scan_requests(services.stages, &services.options.build_args);
    if stages == StageScan::Every {
        requests
            .stages
            .extend(services.stages.stages.iter().map(|stage| stage.index));
    }
    let mut by_target = BTreeMap::new();
    if requests == sbomscan::ScanRequests::default() {
        return Ok(by_target);
    }
    for target in &graph.images {
        let mut extras = Vec::new();
        if requests.context.contains(&target.stage) {
            extras.push(SbomExtra {
                name: "context".to_owned(),
                root: ExtraRoot::Dir(services.options.context.clone()),
            });
        }
        // The last vertex of each scanned stage this target needed.
        let mut last: BTreeMap<usize, usize> = BTreeMap::new();
        for (index, vertex) in graph.vertices.iter().enumerate() {
            if vertex.stage != target.stage
                && requests.stages.contains(&vertex.stage)
                && vertex.needed_by.contains(&target.platform)
                && vertex.step == vertex.steps
            {
                last.insert(vertex.stage, index);
            }
        }
        for (stage, index) in last {
            let Some(done) = results.get(index) else {
                continue;
            };
            let vertex = &graph.vertices[index];
            extras.push(SbomExtra {
                name: vertex
                    .stage_name
                    .clone()
                    .unwrap_or_else(|| format!("stage-{stage}")),
                root: ExtraRoot::Layers(services.lower_dirs(&done.state)?),
            });
        }
        if !extras.is_empty() {
            by_target.insert(target.platform.clone(), extras);
        }
    }
    Ok(by_target)
}
