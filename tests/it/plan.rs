//! Golden build plans through `xbuild debug plan`: one folder per case under
//! `tests/golden/plan/<case>/` with `Dockerfile`, `args` (one argument a line) and the
//! expected `plan.txt` (`UPDATE_GOLDEN=1` rewrites it).

use std::fs;
use std::path::Path;

use crate::util::{run, stderr, stdout, temp_dir, xbuild};

#[test]
fn golden_plans() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/plan");
    let mut cases: Vec<_> = fs::read_dir(&root)
        .expect("tests/golden/plan exists")
        .map(|entry| entry.expect("readable").path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 2, "golden plan cases missing");
    let store = temp_dir();
    let mut failures = Vec::new();
    for case in &cases {
        let args = fs::read_to_string(case.join("args")).unwrap_or_default();
        let output = run(xbuild(store.path())
            .current_dir(case)
            .args([
                "debug",
                "plan",
                "Dockerfile",
                "--build-platform=linux/amd64",
            ])
            .args(args.lines().filter(|line| !line.is_empty())));
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}: {}",
            case.display(),
            stderr(&output)
        );
        let actual = stdout(&output);
        let expected_path = case.join("plan.txt");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            fs::write(&expected_path, &actual).expect("golden file is writable");
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}:\n--- got\n{actual}--- expected\n{expected}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_platform_is_exit_2() {
    let dir = temp_dir();
    fs::write(dir.path().join("Dockerfile"), "FROM busybox\n").unwrap();
    let output = run(xbuild(dir.path()).current_dir(dir.path()).args([
        "debug",
        "plan",
        "Dockerfile",
        "--platform=linux/sparc99",
    ]));
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("sparc99"), "{}", stderr(&output));
}
