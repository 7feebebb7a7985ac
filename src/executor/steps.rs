//! The steps of a build as the provenance's `mode=max` lists them (`buildConfig.steps`):
//! for each target platform, every vertex its image needed, in the graph's order
//! (dependencies first), with what it did, where it is in the Dockerfile, what it built on,
//! whether the cache gave its result and the layer it made. Ids are `step<N>` of the
//! graph's vertex numbers, so a stage built once for several targets has the same id in
//! each target's list, and the same inputs give the same list (reproducible attestations).

use std::collections::BTreeMap;

use super::services::Services;
use super::state::Results;
use crate::attest::provenance::Step;
use crate::plan::{BuildGraph, Op};
use crate::platform::Platform;

/// The steps of each target platform's image, for vertices that finished.
pub(crate) fn record(
    graph: &BuildGraph,
    results: &Results,
    services: &Services<'_>,
) -> BTreeMap<Platform, Vec<Step>> {
    let mut by_target: BTreeMap<Platform, Vec<Step>> = BTreeMap::new();
    for (index, vertex) in graph.vertices.iter().enumerate() {
        let Some(done) = results.get(index) else {
            continue;
        };
        // A FROM has no parent: its layers are the base image's, not made by the build.
        let layer = vertex
            .parent
            .and_then(|parent| results.get(parent))
            .filter(|parent| done.state.layers.len() > parent.state.layers.len())
            .and_then(|_| done.state.layers.last())
            .map(|layer| layer.diff_id.to_string());
        let lines = match &vertex.op {
            Op::Step { instruction } => {
                let span = instruction.instruction.span();
                Some((span.start, span.end))
            }
            Op::Scratch | Op::Image { .. } => None,
        };
        let step = Step {
            id: format!("step{index}"),
            platform: vertex.platform.to_string(),
            stage: vertex
                .stage_name
                .clone()
                .unwrap_or_else(|| vertex.stage.to_string()),
            instruction: vertex.description(),
            lines,
            inputs: vertex
                .parent
                .iter()
                .chain(&vertex.inputs)
                .map(|input| format!("step{input}"))
                .collect(),
            cached: services.was_cached(&done.key),
            layer,
        };
        for target in &vertex.needed_by {
            by_target
                .entry(target.clone())
                .or_default()
                .push(step.clone());
        }
    }
    by_target
}
