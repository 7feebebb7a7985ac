//! Parse benchmark (not a test): a generated 10,000-line Dockerfile through
//! `dockerfile::parse`, then `stages` and `resolve`, timed with `Instant`.
//!
//! Run: `cargo bench --bench parse` (release profile). Prints milliseconds per run.
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use xbuild::dockerfile::{self, ResolveOptions};

/// About `lines` lines of realistic Dockerfile: stages with ARG/ENV/RUN (continuations),
/// COPY --from, heredocs, JSON forms, comments.
fn generate(lines: usize) -> String {
    let mut text = String::from("# syntax=docker/dockerfile:1\nARG BASE=debian:bookworm\n");
    let mut stage = 0;
    while text.lines().count() < lines {
        let _ = writeln!(
            text,
            "FROM --platform=$BUILDPLATFORM ${{BASE}} AS stage{stage}"
        );
        let _ = writeln!(text, "ARG TARGETARCH VERSION=1.{stage}");
        let _ = writeln!(text, "ENV PATH=/opt/stage{stage}/bin:$PATH LANG=C.UTF-8");
        let _ = writeln!(text, "# install what stage {stage} needs");
        let _ = writeln!(text, "RUN --mount=type=cache,target=/var/cache/apt \\");
        let _ = writeln!(text, "    apt-get update && \\");
        let _ = writeln!(
            text,
            "    apt-get install -y curl git make gcc \"lib${{TARGETARCH}}\""
        );
        let _ = writeln!(text, "WORKDIR /src/$VERSION");
        let _ = writeln!(text, "COPY --chown=1000:1000 --chmod=0644 src/ include/ ./");
        if stage > 0 {
            let _ = writeln!(text, "COPY --from=stage{} /out /deps", stage - 1);
        }
        let _ = writeln!(
            text,
            "RUN <<EOF\nset -e\nmake -j4 VERSION=$VERSION\nmake install\nEOF"
        );
        let _ = writeln!(text, "LABEL stage=\"{stage}\" version=$VERSION");
        let _ = writeln!(text, "EXPOSE 80{} 443/tcp", stage % 10);
        let _ = writeln!(
            text,
            "HEALTHCHECK --interval=30s CMD [\"curl\", \"-f\", \"http://localhost/\"]"
        );
        let _ = writeln!(
            text,
            "CMD [\"/usr/local/bin/app\", \"--stage\", \"{stage}\"]\n"
        );
        stage += 1;
    }
    text
}

fn time(runs: u32, mut f: impl FnMut()) -> Duration {
    f(); // warm up
    let start = Instant::now();
    for _ in 0..runs {
        f();
    }
    start.elapsed() / runs
}

fn main() {
    let text = generate(10_000);
    let lines = text.lines().count();
    let runs = 20;
    let parse = time(runs, || {
        std::hint::black_box(dockerfile::parse(&text).expect("generated text parses"));
    });
    let tree = dockerfile::parse(&text).expect("generated text parses");
    let stages_time = time(runs, || {
        std::hint::black_box(dockerfile::stages(&tree).expect("generated text types"));
    });
    let stages = dockerfile::stages(&tree).expect("generated text types");
    let options = ResolveOptions {
        build_args: BTreeMap::new(),
        automatic_args: [("BUILDPLATFORM", "linux/amd64"), ("TARGETARCH", "arm64")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        target: None,
        named_contexts: Default::default(),
        base_triggers: BTreeMap::new(),
    };
    let resolve = time(runs, || {
        std::hint::black_box(
            dockerfile::resolve(&stages, &options).expect("generated text resolves"),
        );
    });
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{lines} lines, {} stages: parse {:.2} ms, stages {:.2} ms, resolve {:.2} ms (mean of {runs})",
        stages.stages.len(),
        ms(parse),
        ms(stages_time),
        ms(resolve)
    );
}
