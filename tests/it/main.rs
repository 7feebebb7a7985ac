//! Integration tests: they run the real `xbuild` binary, as a user would.
#![allow(
    clippy::print_stderr,
    clippy::print_stdout,
    reason = "tests print diagnostics"
)]

mod archcheck; // the wrong-architecture guard on the fixtures' busybox binaries
mod architecture; // ARCHITECTURE.md's import rules: no module or file cycle, clap only in cli/
mod attest; // SBOM scanner on real trees, SPDX/SLSA validated, referrers stored, pushed, pulled
mod auth; // login/logout, wrong passwords, config.json, docker-credential helpers
mod binfmt; // xbuild binfmt ls/install/uninstall, probes, register round trip
mod build; // xbuild build end to end: two platforms, cache, failures, reproducibility
mod buildflags; // --label, --annotation, --add-host judged by skopeo/umoci; bad values exit 2
mod buildx_docs; // lines of buildx's and Docker's docs run unchanged through a `docker` shell function, judged by skopeo, the registry's API, tar
mod cache; // --cache-to/--cache-from between stores: registry and local, min/max, platforms
mod check; // xbuild check: rules, text/JSON output, exit codes, # check=, warnings of a build
mod cli; // usage, --help, default subcommand, exit codes
mod compression; // compression-level and force-compression judged by skopeo, umoci, gzip, zstd
mod compsets; // outputs of different layer compressions: a set of manifests each, judged by skopeo, docker-registry, umoci, gzip, zstd
mod conformance; // BuildKit's Dockerfile frontend tests as data, built and judged by skopeo/umoci
mod crash; // SIGKILL while writing leaves the store readable
mod ctxlink; // COPY of the context links unchanged files from the earlier snapshot; same image, store checks clean after prune
mod eager; // layers of exported images compressed in the background while the other platform builds
mod emulate; // RUN under QEMU: Debian arm64 apt-get install
mod engines; // -o type=containerd into a private containerd (ctr judges), --load into fake engines
mod export; // build outputs on the fixtures, judged by skopeo, dockerd, tar and the fixture rootfs
mod fidelity; // COPY keeps hard links; RUN --mount=type=cache with from= and source=, judged by umoci
mod hostile; // a hostile registry: endless bodies, lying sizes, huge manifests, realms, redirects
mod imagetools; // imagetools create/inspect with buildx's flags, judged by skopeo
mod install; // scripts/install.sh, completions, man pages, the Docker CLI plugin
mod keys; // buildx's --cache-to/--cache-from and -o keys on FROM scratch builds, judged by skopeo and tar
mod layout; // the store read by skopeo/umoci/docker, archives, image commands, snapshots
mod namedctx; // --build-context and --no-cache-filter on the busybox fixtures, both platforms
mod nodes; // build nodes over SSH: sshd in a network namespace as the arm64 node
mod outkeys; // oci-mediatypes=false, store=false, registry.insecure=true on pushes, judged by skopeo, docker-registry and dockerd
mod parse; // Dockerfile frontend: BuildKit conformance data and golden cases (debug ast/stages)
mod plan; // golden build plans through `xbuild debug plan`
mod platform; // every spelling of every platforms/ entry, through every entry point
mod prune; // prune and du with buildx's filters and sizes, cache mounts, the store lock
mod pull; // xbuild pull of skopeo-pushed images per platform; tampered blobs
mod push; // xbuild push judged by skopeo; imagetools create
mod regenv; // docker-registry in three set-ups (plain, HTTPS+auth, fault proxy)
mod reliability; // SIGKILL mid-build, concurrent builds, network faults, a full disk
mod remote; // ADD git://, git and HTTP tarball/Dockerfile URL contexts, on git daemon and loopback HTTP
mod run; // xbuild run per platform, Docker's config rules, exit codes; debug shell
mod sandbox; // the RUN sandbox on the busybox fixtures
mod security; // attacks a RUN step might try: loopback, packets, devices, keyrings, fork bombs...
mod stepflags; // COPY --parents/--exclude, RUN --mount=type=tmpfs|ssh, secret env=, --ssh: judged by umoci and the agent protocol
mod symlinks; // COPY/ADD/WORKDIR resolve links inside the image (merged-/usr Debian)
mod unpack; // hostile tars refused, whiteouts applied
mod util; // TestDir, the xbuild() command builder, `require` for privileged tests
