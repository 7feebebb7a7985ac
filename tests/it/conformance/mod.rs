//! Dockerfile conformance: BuildKit's frontend integration tests
//! (`moby/buildkit/frontend/dockerfile/*_test.go`), ported as data under
//! `tests/conformance/buildkit/` (format: `tests/conformance/README.md`) and run here with the
//! real `xbuild` binary, each case on a fresh store, judged by skopeo and umoci.
//!
//! `buildkit_frontend_cases` prints one line per case and platform (`pass`, `FAIL` with the
//! first difference, `skip` with the reason, `xfail` with the known cause) and fails when a
//! case fails or when a case marked `xfail` passes (remove the marker when the feature lands).
//! `XBUILD_CONFORMANCE=text` runs only the cases whose id contains `text`;
//! `XBUILD_CONFORMANCE_JOBS=N` runs N cases at once (default 2); `XBUILD_CONFORMANCE_KEEP=1`
//! keeps each run's directory (store, context, build logs, unpacked images) and prints it.
//!
//! The README's "Dockerfile conformance" tables are generated from the same data
//! (`readme_table_matches_the_cases`; `UPDATE_GOLDEN=1` rewrites them), so they cannot drift.

mod case;
pub(crate) mod http;
mod judge;
mod run;
mod seed;
mod table;

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use crate::util::{self, Need};

/// Prints a report line on stderr, past the test harness's capture (the lines are the
/// report: they are wanted in CI's log when the test passes too).
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "conformance: {line}");
}

/// One case on one platform, waiting to run.
struct Job {
    suite: usize,
    folder: usize,
    case: usize,
    platform: String,
}

/// What a job gave.
enum Verdict {
    Pass,
    Fail(String),
    Xfail(String),
    /// Marked xfail, but passed.
    Xpass(String),
}

#[test]
fn buildkit_frontend_cases() {
    if !util::require(&[
        Need::Root,
        Need::Fixtures,
        Need::Binfmt("aarch64"),
        Need::Program("skopeo"),
        Need::Program("umoci"),
        Need::Program("git"),
    ]) {
        return;
    }
    let suites = case::load_all();
    let filter = std::env::var("XBUILD_CONFORMANCE").unwrap_or_default();
    let jobs_wanted = std::env::var("XBUILD_CONFORMANCE_JOBS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(2usize)
        .max(1);

    let mut queue = VecDeque::new();
    let mut skipped = Vec::new();
    for (s, suite) in suites.iter().enumerate() {
        for (f, folder) in suite.folders.iter().enumerate() {
            for (c, case) in folder.spec.cases.iter().enumerate() {
                let id = case_id(folder, case);
                if !id.contains(&filter) {
                    continue;
                }
                if let Some(reason) = &case.skip {
                    skipped.push(format!("{id}: skip ({reason})"));
                    continue;
                }
                if let Some(check) = &case.needs_host {
                    let met = std::process::Command::new("sh")
                        .args(["-euc", check])
                        .status()
                        .is_ok_and(|status| status.success());
                    if !met {
                        let reason = case.needs_host_reason.as_deref().unwrap_or(check);
                        skipped.push(format!("{id}: skip (this host lacks: {reason})"));
                        continue;
                    }
                }
                for platform in case.platforms(&folder.dir) {
                    queue.push_back(Job {
                        suite: s,
                        folder: f,
                        case: c,
                        platform,
                    });
                }
            }
        }
    }
    for line in &skipped {
        report(line);
    }

    let seed_dir = util::temp_dir();
    let fixtures = util::fixtures_dir().expect("fixtures checked by require");
    seed::make(&fixtures, seed_dir.path());
    let shared = run::Shared::new(seed_dir.path());

    let started = Instant::now();
    let total = queue.len();
    let queue = Mutex::new(queue);
    let results: Mutex<Vec<(String, Verdict)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs_wanted {
            scope.spawn(|| {
                loop {
                    let Some(job) = queue.lock().expect("lock").pop_front() else {
                        break;
                    };
                    let folder = &suites[job.suite].folders[job.folder];
                    let case = &folder.spec.cases[job.case];
                    let id = format!("{} {}", case_id(folder, case), job.platform);
                    let clock = Instant::now();
                    let outcome = run::run(folder, case, &job.platform, &shared);
                    let seconds = clock.elapsed().as_secs_f64();
                    let verdict = match (outcome, case.xfail_on(&job.platform)) {
                        (Ok(()), None) => Verdict::Pass,
                        (Err(difference), None) => Verdict::Fail(difference),
                        (Err(difference), Some(reason)) => match &case.xfail_match {
                            Some(known) if !difference.contains(known.as_str()) => {
                                Verdict::Fail(format!(
                                    "marked xfail ({reason}) with {known:?}, but failed otherwise: {difference}"
                                ))
                            }
                            _ => Verdict::Xfail(format!("{reason} [{}]", first_line(&difference))),
                        },
                        (Ok(()), Some(reason)) => Verdict::Xpass(reason.to_owned()),
                    };
                    let line = match &verdict {
                        Verdict::Pass => "pass".to_owned(),
                        Verdict::Fail(difference) => format!("FAIL: {difference}"),
                        Verdict::Xfail(reason) => format!("xfail: {reason}"),
                        Verdict::Xpass(reason) => {
                            format!("XPASS (marked xfail: {reason}): remove the marker")
                        }
                    };
                    report(&format!("{id}: {line} ({seconds:.1} s)"));
                    results.lock().expect("lock").push((id, verdict));
                }
            });
        }
    });

    let results = results.into_inner().expect("lock");
    let count = |pick: fn(&Verdict) -> bool| results.iter().filter(|(_, v)| pick(v)).count();
    let passed = count(|v| matches!(v, Verdict::Pass));
    let xfailed = count(|v| matches!(v, Verdict::Xfail(_)));
    let bad: Vec<String> = results
        .iter()
        .filter_map(|(id, verdict)| match verdict {
            Verdict::Fail(difference) => Some(format!("FAIL {id}: {difference}")),
            Verdict::Xpass(reason) => Some(format!("XPASS {id} (marked xfail: {reason})")),
            _ => None,
        })
        .collect();
    report(&format!(
        "{total} case runs in {:.0} s with {jobs_wanted} jobs: {passed} pass, {xfailed} xfail, {} fail or xpass; {} cases skipped",
        started.elapsed().as_secs_f64(),
        bad.len(),
        skipped.len()
    ));
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or("");
    match line.char_indices().nth(200) {
        Some((at, _)) => &line[..at],
        None => line,
    }
}

/// `<stem>/<folder>[/<name>]`.
fn case_id(folder: &case::Folder, case: &case::Case) -> String {
    match &case.name {
        Some(name) => format!("{}/{name}", folder.id),
        None => folder.id.clone(),
    }
}

#[test]
fn every_go_test_is_ported_or_skipped_and_every_case_names_one() {
    let suites = case::load_all();
    assert!(!suites.is_empty(), "no conformance data");
    let mut problems = Vec::new();
    for suite in &suites {
        for name in suite.file.skip.keys() {
            if !suite.file.tests.contains(name) {
                problems.push(format!("{}: skip names unknown test {name}", suite.stem));
            }
            if !suite.file.skip[name].contains(": ") {
                problems.push(format!(
                    "{}: skip reason of {name} needs `Category: details`",
                    suite.stem
                ));
            }
        }
        for folder in &suite.folders {
            if !suite.file.tests.contains(&folder.spec.go) {
                problems.push(format!(
                    "{}: go = {:?} is not a test of {}",
                    folder.id, folder.spec.go, suite.file.source
                ));
            }
            if suite.file.skip.contains_key(&folder.spec.go) {
                problems.push(format!(
                    "{}: {} is both skipped and ported",
                    folder.id, folder.spec.go
                ));
            }
            let scripted = folder
                .spec
                .serve
                .as_ref()
                .is_some_and(|serve| serve.script.is_some());
            let logs_requests = folder.spec.cases.iter().any(|case| {
                case.build
                    .iter()
                    .any(|build| build.expect.http_requests.is_some())
            });
            if scripted && logs_requests {
                problems.push(format!(
                    "{}: http_requests with serve.script (its site and log are shared between runs)",
                    folder.id
                ));
            }
            if folder.spec.cases.is_empty() {
                problems.push(format!("{}: no [[case]]", folder.id));
            }
            let mut names = std::collections::BTreeSet::new();
            for case in &folder.spec.cases {
                if !names.insert(case.name.clone()) {
                    problems.push(format!("{}: two cases named {:?}", folder.id, case.name));
                }
                if case.build.is_empty() && case.skip.is_none() {
                    problems.push(format!("{}: a case without [[case.build]]", folder.id));
                }
                if case.xfail.is_some() && case.skip.is_some() {
                    problems.push(format!("{}: a case both xfail and skip", folder.id));
                }
                if case.needs_host.is_some() != case.needs_host_reason.is_some() {
                    problems.push(format!(
                        "{}: needs_host and needs_host_reason go together",
                        folder.id
                    ));
                }
                if (case.xfail_platforms.is_some() || case.xfail_match.is_some())
                    && case.xfail.is_none()
                {
                    problems.push(format!(
                        "{}: xfail_platforms or xfail_match without xfail",
                        folder.id
                    ));
                }
                if let Some(reason) = &case.skip {
                    if !reason.contains(": ") {
                        problems.push(format!(
                            "{}: skip reason needs `Category: details`",
                            folder.id
                        ));
                    }
                }
            }
        }
        for test in &suite.file.tests {
            let ported = suite.folders.iter().any(|f| &f.spec.go == test);
            if !ported && !suite.file.skip.contains_key(test) {
                problems.push(format!(
                    "{}: {test} is neither ported nor skipped",
                    suite.stem
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn readme_table_matches_the_cases() {
    table::check_readme(&case::load_all());
}
