//! BuildKit's SBOM scan arguments: `BUILDKIT_SBOM_SCAN_STAGE` and
//! `BUILDKIT_SBOM_SCAN_CONTEXT`, which ask an SBOM build (`--sbom`) to scan other stages and
//! the build context besides the final image. They are not build arguments like the others:
//! never in a step's environment, only read to decide what to scan.
//!
//! As BuildKit decides (dockerfile2llb, `isEnabledForStage`), for each stage and each of the
//! two names: the global value first (a meta `ARG` before the first `FROM`, its default or
//! `--build-arg`), then each `ARG` of that name in the stage in order (its default, else the
//! global value; `--build-arg` over both). A value is a boolean (`true`, `1`, `false`, ...),
//! or a comma-separated list of stage names that are scanned. A `--build-arg` alone, with no
//! `ARG` of that name in the Dockerfile, changes nothing. Then: the stages the target needs
//! (not the target itself) whose `BUILDKIT_SBOM_SCAN_STAGE` is on are scanned, and the
//! context is when the *target's* `BUILDKIT_SBOM_SCAN_CONTEXT` is on. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use super::instruction::{Instruction, Stages};

/// Asks to scan the build context.
pub const SCAN_CONTEXT: &str = "BUILDKIT_SBOM_SCAN_CONTEXT";
/// Asks to scan a stage.
pub const SCAN_STAGE: &str = "BUILDKIT_SBOM_SCAN_STAGE";

/// Whether `name` is one of the scan arguments (kept out of a step's environment).
pub fn is_scan_arg(name: &str) -> bool {
    name == SCAN_CONTEXT || name == SCAN_STAGE
}

/// Which stages (by index) have each scan argument on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanRequests {
    /// Stages whose `BUILDKIT_SBOM_SCAN_STAGE` is on.
    pub stages: BTreeSet<usize>,
    /// Stages whose `BUILDKIT_SBOM_SCAN_CONTEXT` is on.
    pub context: BTreeSet<usize>,
}

/// What the Dockerfile and the build arguments ask of each stage.
pub fn scan_requests(stages: &Stages, build_args: &BTreeMap<String, String>) -> ScanRequests {
    let mut requests = ScanRequests::default();
    for (name, set) in [
        (SCAN_STAGE, &mut requests.stages),
        (SCAN_CONTEXT, &mut requests.context),
    ] {
        let global = stages
            .meta_args
            .iter()
            .flat_map(|arg| &arg.args)
            .filter(|declaration| declaration.name == name)
            .fold(None, |value, declaration| {
                build_args
                    .get(name)
                    .or(declaration.default.as_ref())
                    .cloned()
                    .or(value)
            });
        for stage in &stages.stages {
            let mut value = global.clone();
            for instruction in &stage.instructions {
                let Instruction::Arg(arg) = instruction else {
                    continue;
                };
                for declaration in arg.args.iter().filter(|d| d.name == name) {
                    if let Some(given) = build_args
                        .get(name)
                        .or(declaration.default.as_ref())
                        .or(global.as_ref())
                    {
                        value = Some(given.clone());
                    }
                }
            }
            let stage_name = stage.name.as_deref().unwrap_or_default();
            if value.is_some_and(|value| enabled_for(stage_name, &value)) {
                set.insert(stage.index);
            }
        }
    }
    requests
}

/// A value turns scanning on for `stage`: a true boolean (as Go's `strconv.ParseBool`), or
/// a comma-separated list naming it.
fn enabled_for(stage: &str, value: &str) -> bool {
    crate::gostd::parse_bool(value)
        .unwrap_or_else(|| !stage.is_empty() && value.split(',').any(|name| name == stage))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(dockerfile: &str, args: &[(&str, &str)]) -> ScanRequests {
        let parsed = crate::dockerfile::parse(dockerfile).unwrap();
        let stages = crate::dockerfile::stages(&parsed).unwrap();
        let args = args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        scan_requests(&stages, &args)
    }

    #[test]
    fn a_stage_arg_turns_its_stage_on() {
        let found = requests(
            "FROM a AS build\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nRUN x\n\
             FROM b AS final\nARG BUILDKIT_SBOM_SCAN_CONTEXT=true\nCOPY --from=build / /\n",
            &[],
        );
        assert_eq!(found.stages, BTreeSet::from([0]));
        assert_eq!(found.context, BTreeSet::from([1]));
    }

    #[test]
    fn global_values_lists_and_build_args() {
        let dockerfile = "ARG BUILDKIT_SBOM_SCAN_STAGE=x,z\nFROM a AS x\nFROM a AS y\nFROM a\n";
        assert_eq!(requests(dockerfile, &[]).stages, BTreeSet::from([0]));
        // --build-arg over the global default; an unnamed stage is never in a list.
        assert_eq!(
            requests(dockerfile, &[(SCAN_STAGE, "true")]).stages,
            BTreeSet::from([0, 1, 2])
        );
        assert_eq!(
            requests(dockerfile, &[(SCAN_STAGE, "y")]).stages,
            BTreeSet::from([1])
        );
        // A stage's own ARG after the global one wins; without a default it takes the
        // global value.
        let dockerfile = "ARG BUILDKIT_SBOM_SCAN_STAGE=true\nFROM a AS x\n\
                          ARG BUILDKIT_SBOM_SCAN_STAGE=false\nFROM a AS y\n\
                          ARG BUILDKIT_SBOM_SCAN_STAGE\n";
        assert_eq!(requests(dockerfile, &[]).stages, BTreeSet::from([1]));
    }

    #[test]
    fn a_build_arg_alone_changes_nothing() {
        let found = requests(
            "FROM a AS build\nRUN x\nFROM b\n",
            &[(SCAN_STAGE, "true"), (SCAN_CONTEXT, "true")],
        );
        assert_eq!(found, ScanRequests::default());
        assert!(is_scan_arg(SCAN_STAGE) && is_scan_arg(SCAN_CONTEXT));
        assert!(!is_scan_arg("TARGETARCH"));
    }
}
