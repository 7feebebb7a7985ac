//! The README's "Dockerfile conformance" tables, rendered from the case data: per BuildKit
//! source file, its Go tests, how many are ported, the cases they became, how many pass, how
//! many are known to fail (xfail, with the causes) and what is skipped with the reasons. The
//! README holds the rendering between two markers; the test fails when they differ
//! (`UPDATE_GOLDEN=1` rewrites it). Counts come from the data alone: the harness run is what
//! proves a case without `xfail` passes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use super::case::Suite;

const BEGIN: &str = "<!-- conformance-table: generated from tests/conformance by `UPDATE_GOLDEN=1 cargo test --test it conformance::readme`; do not edit -->";
const END: &str = "<!-- end of conformance-table -->";

/// Renders the tables.
pub(crate) fn render(suites: &[Suite]) -> String {
    let mut out = String::new();
    let mut totals = [0usize; 6];
    let mut rows = String::new();
    let mut details = String::new();
    for suite in suites {
        let go_tests = suite.file.tests.len();
        let ported = suite
            .file
            .tests
            .iter()
            .filter(|test| suite.folders.iter().any(|f| &f.spec.go == *test))
            .count();
        let mut cases = 0;
        let mut passing = 0;
        let mut xfail = 0;
        let mut skipped_cases = 0;
        let mut xfail_groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        let mut skip_reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (test, reason) in &suite.file.skip {
            skip_reasons
                .entry(reason.clone())
                .or_default()
                .push(format!("`{test}`"));
        }
        for folder in &suite.folders {
            for case in &folder.spec.cases {
                let name = match &case.name {
                    Some(name) => format!("`{}/{name}`", folder.dir_name()),
                    None => format!("`{}`", folder.dir_name()),
                };
                if let Some(reason) = &case.skip {
                    skipped_cases += 1;
                    skip_reasons.entry(reason.clone()).or_default().push(name);
                    continue;
                }
                cases += 1;
                match &case.xfail {
                    Some(reason) => {
                        xfail += 1;
                        let name = match &case.xfail_platforms {
                            Some(platforms) => format!("{name} ({})", platforms.join(", ")),
                            None => name,
                        };
                        xfail_groups
                            .entry((reason.clone(), folder.dir_name()))
                            .or_default()
                            .push(name);
                    }
                    None => passing += 1,
                }
            }
        }
        // More than three cases of one folder with one reason are named as the folder.
        let mut xfail_reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for ((reason, folder_name), names) in xfail_groups {
            let total = suite
                .folders
                .iter()
                .find(|folder| folder.dir_name() == folder_name)
                .map_or(0, |folder| folder.spec.cases.len());
            let entry = xfail_reasons.entry(reason).or_default();
            if names.len() > 3 {
                let of = if names.len() == total {
                    format!("all {total} cases")
                } else {
                    format!("{} of its {total} cases", names.len())
                };
                entry.push(format!("`{folder_name}` ({of})"));
            } else {
                entry.extend(names);
            }
        }
        let skipped = suite.file.skip.len() + skipped_cases;
        for (total, value) in totals
            .iter_mut()
            .zip([go_tests, ported, cases, passing, xfail, skipped])
        {
            *total += value;
        }
        let file = Path::new(&suite.file.source)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            rows,
            "| `{file}` | {go_tests} | {ported} | {cases} | {passing} | {xfail} | {skipped} |"
        );
        if xfail_reasons.is_empty() && skip_reasons.is_empty() {
            continue;
        }
        let _ = writeln!(details, "\n`{file}`:");
        for (reason, names) in &xfail_reasons {
            let _ = writeln!(details, "- xfail: {reason}: {}", names.join(", "));
        }
        for (reason, names) in &skip_reasons {
            let _ = writeln!(details, "- skipped: {reason}: {}", names.join(", "));
        }
    }
    let mut commits: Vec<&str> = suites.iter().map(|s| s.file.commit.as_str()).collect();
    commits.dedup();
    let _ = writeln!(
        out,
        "Ported from moby/buildkit at {}.\n",
        commits
            .iter()
            .map(|commit| format!("`{}`", &commit[..12.min(commit.len())]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out.push_str("| BuildKit file | Go tests | ported | cases | passing | xfail | skipped |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    out.push_str(&rows);
    let [go_tests, ported, cases, passing, xfail, skipped] = totals;
    let _ = writeln!(
        out,
        "| total | {go_tests} | {ported} | {cases} | {passing} | {xfail} | {skipped} |"
    );
    out.push_str(&details);
    out
}

impl super::case::Folder {
    /// The folder's own name.
    pub(crate) fn dir_name(&self) -> String {
        self.dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Compares the README's generated part with the data (or rewrites it).
pub(crate) fn check_readme(suites: &[Suite]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let start = readme
        .find(BEGIN)
        .unwrap_or_else(|| panic!("README.md lacks the marker {BEGIN}"));
    let end = readme
        .find(END)
        .unwrap_or_else(|| panic!("README.md lacks the marker {END}"));
    let current = &readme[start + BEGIN.len()..end];
    let wanted = format!("\n{}", render(suites));
    if current == wanted {
        return;
    }
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let updated = format!("{}{BEGIN}{wanted}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).expect("README.md is writable");
        return;
    }
    panic!(
        "README.md's conformance tables differ from tests/conformance (UPDATE_GOLDEN=1 rewrites them):\n--- README\n{current}\n--- data\n{wanted}"
    );
}
