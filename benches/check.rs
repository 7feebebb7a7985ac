//! Check benchmark (not a test): `xbuild check`'s rules on a generated 10,000-line
//! Dockerfile (parse included), for the build machine alone and for two platforms (which
//! also works out the stages that run emulated). The goal is under 100 ms.
//!
//! Run: `cargo bench --bench check` (release profile). Prints milliseconds per run.
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::fmt::Write;
use std::time::{Duration, Instant};

use xbuild::check::{self, CheckOptions};
use xbuild::platform::Platform;

/// About `lines` lines of Dockerfile with something for most rules to look at: package
/// installs, `COPY . .` before installs, variables, heredocs, compile steps, comments.
fn generate(lines: usize) -> String {
    let mut text = String::from(
        "# syntax=docker/dockerfile:1\n# BASE the base image\nARG BASE=debian:bookworm\n",
    );
    let mut stage = 0;
    while text.lines().count() < lines {
        let _ = writeln!(text, "\n# stage{stage} builds part {stage}");
        if stage % 2 == 0 {
            let _ = writeln!(
                text,
                "FROM --platform=$BUILDPLATFORM ${{BASE}} AS stage{stage}"
            );
        } else {
            let _ = writeln!(text, "FROM ${{BASE}} AS stage{stage}");
        }
        let _ = writeln!(text, "ARG TARGETARCH VERSION=1.{stage}");
        let _ = writeln!(text, "ENV PATH=/opt/stage{stage}/bin:$PATH LANG=C.UTF-8");
        let _ = writeln!(text, "RUN apt-get update && \\");
        let _ = writeln!(
            text,
            "    apt-get install -y --no-install-recommends curl git make gcc \"lib${{TARGETARCH}}\" && \\"
        );
        let _ = writeln!(text, "    rm -rf /var/lib/apt/lists/*");
        let _ = writeln!(text, "WORKDIR /src/$VERSION");
        let _ = writeln!(text, "COPY package.json package-lock.json ./");
        let _ = writeln!(text, "RUN npm ci");
        let _ = writeln!(text, "COPY . .");
        if stage > 0 {
            let _ = writeln!(text, "COPY --from=stage{} /out /deps", stage - 1);
        }
        let _ = writeln!(
            text,
            "RUN <<EOF\nset -e\nmake -j4 VERSION=$VERSION ARCH=$TARGETARCH\nmake install\nEOF"
        );
        let _ = writeln!(text, "LABEL stage=\"{stage}\" version=$VERSION");
        let _ = writeln!(text, "EXPOSE 80{} 443/tcp", stage % 10);
        let _ = writeln!(
            text,
            "HEALTHCHECK --interval=30s CMD [\"curl\", \"-f\", \"http://localhost/\"]"
        );
        let _ = writeln!(text, "USER 1000");
        let _ = writeln!(
            text,
            "CMD [\"/usr/local/bin/app\", \"--stage\", \"{stage}\"]"
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
    let runs = 10;
    let amd64 = Platform::parse("linux/amd64").expect("a platform");
    let arm64 = Platform::parse("linux/arm64").expect("a platform");
    let one = CheckOptions::new(amd64.clone());
    let mut two = CheckOptions::new(amd64.clone());
    two.targets = vec![amd64, arm64];
    let mut warnings = 0;
    let single = time(runs, || {
        let report = check::check_text(&text, &one).expect("generated text checks");
        warnings = report.warnings.len();
    });
    let mut warnings_two = 0;
    let multi = time(runs, || {
        let report = check::check_text(&text, &two).expect("generated text checks");
        warnings_two = report.warnings.len();
    });
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{lines} lines: check {:.2} ms for the build machine ({warnings} warnings), {:.2} ms for linux/amd64,linux/arm64 ({warnings_two} warnings, emulated stages worked out) (mean of {runs})",
        ms(single),
        ms(multi)
    );
}
