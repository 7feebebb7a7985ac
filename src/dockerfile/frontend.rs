//! `# syntax=`: which frontend a Dockerfile asks for, and whether xbuild can build it.
//!
//! BuildKit runs the image a `# syntax=` directive (or the `BUILDKIT_SYNTAX` build argument,
//! which wins) names as the frontend. xbuild runs no frontend images: it implements the
//! Dockerfile syntax 1.x itself. So a reference to `docker/dockerfile` (or
//! `docker/dockerfile-upstream`, the same frontend built from BuildKit's main branch) at a
//! 1.x tag, a channel tag (`latest`, `labs`, `master`, ...) or a digest proceeds, with a note
//! that the built-in frontend is used; any other image is refused before any work, naming the
//! directive's line. Nothing here does I/O: no image is pulled or looked at.

use std::collections::BTreeMap;

use super::error::{DockerfileError, ErrorKind};
use super::syntax::Directives;

/// The build argument that overrides the directive, as in BuildKit.
pub const SYNTAX_BUILD_ARG: &str = "BUILDKIT_SYNTAX";

/// Decides on the frontend the Dockerfile asks for: `Ok(None)` when it asks for none,
/// `Ok(Some(note))` when it asks for `docker/dockerfile:1...` (the note says the built-in
/// frontend is used), an error for any other frontend image.
///
/// # Errors
/// [`ErrorKind::UnsupportedFrontend`], on the directive's line (or without a line when the
/// build argument names it).
pub fn check_syntax(
    directives: &Directives,
    build_args: &BTreeMap<String, String>,
) -> Result<Option<String>, DockerfileError> {
    let (value, line) = match build_args.get(SYNTAX_BUILD_ARG) {
        Some(value) if !value.trim().is_empty() => (value.trim(), None),
        _ => match &directives.syntax {
            Some(value) => (value.as_str(), directives.syntax_line),
            None => return Ok(None),
        },
    };
    // `# syntax=ref extra args`: the image is the first word (BuildKit's `cmdline`).
    let reference = value.split_whitespace().next().unwrap_or_default();
    if !is_dockerfile_frontend(reference) {
        let kind = ErrorKind::UnsupportedFrontend {
            reference: reference.to_owned(),
        };
        return Err(match line {
            Some(line) => DockerfileError::new(line, kind),
            None => DockerfileError::global(kind),
        });
    }
    let source = match line {
        Some(_) => format!("# syntax={value}"),
        None => format!("--build-arg {SYNTAX_BUILD_ARG}={value}"),
    };
    Ok(Some(format!(
        "{source}: xbuild builds with its built-in Dockerfile frontend (syntax 1.x); the \
         frontend image is not pulled"
    )))
}

/// Whether `reference` names BuildKit's Dockerfile frontend at a 1.x version: the
/// repository `docker/dockerfile` or `docker/dockerfile-upstream` (optionally on
/// `docker.io`), with no tag (`latest`), a 1.x tag (`1`, `1.7`, `1.7.1`, `1-labs`,
/// `1.4-experimental`), a channel tag (`latest`, `labs`, `experimental`, `master`,
/// `master-labs`), or a digest (which names some build of it: its version cannot be known
/// without pulling, so it is taken as 1.x).
pub fn is_dockerfile_frontend(reference: &str) -> bool {
    let (name_tag, digest) = match reference.split_once('@') {
        Some((name_tag, digest)) => (name_tag, Some(digest)),
        None => (reference, None),
    };
    let last_slash = name_tag.rfind('/').map_or(0, |at| at + 1);
    let (name, tag) = match name_tag[last_slash..].find(':') {
        Some(at) => (
            &name_tag[..last_slash + at],
            Some(&name_tag[last_slash + at + 1..]),
        ),
        None => (name_tag, None),
    };
    let name = name
        .strip_prefix("docker.io/")
        .or_else(|| name.strip_prefix("index.docker.io/"))
        .or_else(|| name.strip_prefix("registry-1.docker.io/"))
        .unwrap_or(name);
    if name != "docker/dockerfile" && name != "docker/dockerfile-upstream" {
        return false;
    }
    if let Some(digest) = digest {
        let valid = digest.split_once(':').is_some_and(|(algorithm, hex)| {
            !algorithm.is_empty() && !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !valid {
            return false;
        }
    }
    match tag {
        None => true,
        Some(tag) => {
            matches!(tag, "latest" | "labs" | "experimental" | "master")
                || tag.starts_with("master-")
                || tag == "1"
                || tag.starts_with("1.")
                || tag.starts_with("1-")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directives(syntax: &str, line: usize) -> Directives {
        Directives {
            syntax: Some(syntax.to_owned()),
            syntax_line: Some(line),
            ..Directives::default()
        }
    }

    #[rstest::rstest]
    #[case("docker/dockerfile:1")]
    #[case("docker/dockerfile:1.7")]
    #[case("docker/dockerfile:1.7.1")]
    #[case("docker/dockerfile:1-labs")]
    #[case("docker/dockerfile:1.4-labs")]
    #[case("docker/dockerfile:1.0-experimental")]
    #[case("docker/dockerfile:experimental")]
    #[case("docker/dockerfile:labs")]
    #[case("docker/dockerfile")]
    #[case("docker.io/docker/dockerfile:1")]
    #[case("docker/dockerfile-upstream:master")]
    #[case("docker/dockerfile-upstream:master-labs")]
    #[case("docker/dockerfile-upstream:1.9")]
    #[case(
        "docker/dockerfile:1@sha256:ac85f380a63b13dfcefa89046420e1781752bab202122f8f50032edf31be0021"
    )]
    #[case(
        "docker/dockerfile@sha256:ac85f380a63b13dfcefa89046420e1781752bab202122f8f50032edf31be0021"
    )]
    fn the_dockerfile_frontend_at_1_x_proceeds(#[case] reference: &str) {
        assert!(is_dockerfile_frontend(reference), "{reference}");
        let note = check_syntax(&directives(reference, 1), &BTreeMap::new())
            .unwrap()
            .unwrap();
        assert!(note.contains("built-in Dockerfile frontend"), "{note}");
    }

    #[rstest::rstest]
    #[case("foobar")]
    #[case("docker/dockerfile:2")]
    #[case("docker/dockerfile:0.9")]
    #[case("docker/dockerfile:10")]
    #[case("tonistiigi/dockerfile:1")]
    #[case("example.com/docker/dockerfile:1")]
    #[case("docker/dockerfile-custom:1")]
    #[case("docker/dockerfile@sha256:")]
    fn any_other_frontend_image_is_refused(#[case] reference: &str) {
        assert!(!is_dockerfile_frontend(reference), "{reference}");
        let error = check_syntax(&directives(reference, 2), &BTreeMap::new()).unwrap_err();
        assert_eq!(error.line, Some(2));
        assert!(
            error.to_string().starts_with(&format!(
                "Dockerfile:2: # syntax={reference}: xbuild does not run frontend images"
            )),
            "{error}"
        );
    }

    #[test]
    fn the_build_argument_wins_over_the_directive() {
        let args: BTreeMap<String, String> = [(
            SYNTAX_BUILD_ARG.to_owned(),
            "docker/dockerfile:1".to_owned(),
        )]
        .into();
        assert!(
            check_syntax(&directives("foobar", 1), &args)
                .unwrap()
                .is_some()
        );
        let args: BTreeMap<String, String> =
            [(SYNTAX_BUILD_ARG.to_owned(), "foobar".to_owned())].into();
        let error = check_syntax(&directives("docker/dockerfile:1", 1), &args).unwrap_err();
        assert_eq!(error.line, None);
        assert_eq!(
            check_syntax(&Directives::default(), &BTreeMap::new()),
            Ok(None)
        );
    }

    #[test]
    fn extra_words_after_the_reference_are_its_arguments() {
        let note = check_syntax(
            &directives("docker/dockerfile:1 --debug", 1),
            &BTreeMap::new(),
        );
        assert!(note.unwrap().is_some());
    }
}
