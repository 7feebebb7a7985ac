//! Lines copied from buildx's and Docker's documentation, run unchanged through `sh` with a
//! `docker` function that calls xbuild (`docker buildx build ...` → `xbuild build ...`), each
//! judged by its documented effect through skopeo, docker-registry's API, tar and the files
//! written. Only names change: `<registry>/<image>`, `user/app`, `TAG`, ... become images of
//! the loopback registry (`$REG/...`), base images the fixtures', paths temporary ones. The
//! doc files are the `docker/buildx` repository's `docs/reference/*.md` and the `docker/docs`
//! repository's `content/manuals/build/**.md` (read 2026-12-07). Lines that stay refused are
//! checked for their clear refusal (exit 2 and the reason), so a change is noticed.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::regenv::{self, Setup, TestRegistry};
use crate::util::{self, Need};

/// The `sh` prelude: `docker buildx X ...` and `docker X ...` run `xbuild X ...`.
const PRELUDE: &str = "docker() { if [ \"$1\" = buildx ]; then shift; fi; \"$XBUILD\" \"$@\"; }\n";

/// A registry, a build context and stores, for running documented lines.
struct Docs {
    registry: TestRegistry,
    dir: tempfile::TempDir,
}

impl Docs {
    /// Starts a registry holding the fixture busybox (`$REG/busybox:latest`, every platform)
    /// and writes the context `ctx/` with `dockerfile` (`{REG}` replaced by the registry).
    fn start(dockerfile: &str) -> Option<Self> {
        if !regenv::ready(Setup::Plain)
            || !util::require(&[
                Need::Root,
                Need::Program("tar"),
                Need::Program("jq"),
                Need::Program("curl"),
            ])
        {
            return None;
        }
        let registry = TestRegistry::start(Setup::Plain);
        registry.skopeo_push_fixture("busybox:latest", None);
        let docs = Self {
            registry,
            dir: util::temp_dir(),
        };
        docs.write("ctx/Dockerfile", &docs.with_registry(dockerfile));
        docs.write("ctx/hello.txt", "hello\n");
        Some(docs)
    }

    fn with_registry(&self, text: &str) -> String {
        text.replace("{REG}", &self.registry.host)
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Runs the documented `line` in `ctx/` with the store `store` (each store name is a
    /// machine of its own: a CI runner, a colleague's laptop).
    fn run_in(&self, store: &str, line: &str) -> Output {
        let home = self.path(store);
        std::fs::create_dir_all(&home).unwrap();
        util::run(
            Command::new("sh")
                .arg("-c")
                .arg(format!("{PRELUDE}{line}"))
                .current_dir(self.path("ctx"))
                .env("XBUILD", env!("CARGO_BIN_EXE_xbuild"))
                .env("REG", &self.registry.host)
                .env("XBUILD_ROOT", home.join("store"))
                .env("DOCKER_CONFIG", home.join("docker"))
                .env("HOME", &home)
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .env_remove("XBUILD_INSECURE_REGISTRIES")
                .env_remove("DOCKER_HOST"),
        )
    }

    fn run(&self, line: &str) -> Output {
        self.run_in("home", line)
    }

    /// Runs `line`, which must succeed; returns stdout and stderr.
    fn ok_in(&self, store: &str, line: &str) -> (String, String) {
        let output = self.run_in(store, line);
        assert!(
            output.status.success(),
            "{line}\nexit {:?}\n{}{}",
            output.status.code(),
            util::stdout(&output),
            util::stderr(&output)
        );
        (util::stdout(&output), util::stderr(&output))
    }

    fn ok(&self, line: &str) -> (String, String) {
        self.ok_in("home", line)
    }

    /// Runs `line`, which must be refused before any work (exit 2) saying `reason`.
    fn refused(&self, line: &str, reason: &str) {
        let output = self.run(line);
        let stderr = util::stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{line}\n{stderr}");
        assert!(
            stderr.contains(reason),
            "{line}: wanted {reason:?} in\n{stderr}"
        );
    }

    /// `skopeo inspect --raw` of `$REG/name`.
    fn raw(&self, name: &str) -> serde_json::Value {
        serde_json::from_slice(&self.registry.skopeo_raw(name)).unwrap()
    }

    /// The config blob of `$REG/name` (one manifest), as the registry serves it.
    fn config(&self, name: &str) -> serde_json::Value {
        let reference = format!("docker://{}/{name}", self.registry.direct);
        let output = util::run(
            &mut self
                .registry
                .skopeo(&["inspect", "--config", "--raw", &reference], &[""]),
        );
        assert!(output.status.success(), "{}", util::stderr(&output));
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// The registry's tags of a repository (docker-registry's API), empty when none.
    fn tags(&self, repository: &str) -> Vec<String> {
        let url = format!("http://{}/v2/{repository}/tags/list", self.registry.direct);
        let output = util::run(Command::new("curl").args(["-s", &url]));
        let answer: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
        answer["tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .map(|tag| tag.as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
    }
}

fn digest_of(value: &serde_json::Value) -> String {
    value.as_str().unwrap().to_owned()
}

/// The entries of a tar archive.
fn tar_list(path: &Path) -> Vec<String> {
    let output = util::run(Command::new("tar").arg("-tf").arg(path));
    assert!(output.status.success(), "{}", util::stderr(&output));
    util::stdout(&output).lines().map(str::to_owned).collect()
}

const RUN_DOCKERFILE: &str = "FROM {REG}/busybox:latest\n\
    RUN cat /etc/hosts > /hosts.txt && ulimit -n > /nofile.txt\n\
    COPY hello.txt /hello.txt\n";

/// buildx_build.md: `--add-host`, `--annotation`, `--ulimit`, `BUILDKIT_MULTI_PLATFORM`.
/// A line without an output leaves its result in the store; the same line with `-o
/// type=local` added then runs no step again and shows what the first one made.
#[test]
fn build_reference_lines() {
    let Some(docs) = Docs::start(RUN_DOCKERFILE) else {
        return;
    };
    let export = |line: &str| -> String {
        let (_, stderr) = docs.ok(&format!("{line} -o type=local,dest=../out"));
        assert!(stderr.contains("0 RUN steps run"), "{line}: {stderr}");
        docs.read("out/hosts.txt") + &docs.read("out/nofile.txt")
    };

    // buildx_build.md, "Add entries to container hosts file (--add-host)".
    let line = "docker buildx build --add-host my_hostname=8.8.8.8 --add-host my_hostname_v6=2001:4860:4860::8888 .";
    docs.ok(line);
    let made = export(line);
    assert!(made.contains("8.8.8.8\tmy_hostname\n"), "{made}");
    assert!(
        made.contains("2001:4860:4860::8888\tmy_hostname_v6\n"),
        "{made}"
    );
    // (same section) Refused: the step's network (slirp4netns, host loopback disabled) has
    // no gateway to the host.
    docs.refused(
        "docker buildx build --add-host host.docker.internal=host-gateway .",
        "host-gateway is not supported",
    );
    // (same section) ':' and '=' separators, an IPv6 address in brackets.
    let line = "docker buildx build --add-host my-hostname:10.180.0.1 --add-host my-hostname_v6=[2001:4860:4860::8888] .";
    docs.ok(line);
    let made = export(line);
    assert!(made.contains("10.180.0.1\tmy-hostname\n"), "{made}");
    assert!(
        made.contains("2001:4860:4860::8888\tmy-hostname_v6\n"),
        "{made}"
    );

    // buildx_build.md, "Set ulimits (--ulimit)".
    let line = "docker buildx build --ulimit nofile=1024:1024 .";
    docs.ok(line);
    assert!(export(line).ends_with("1024\n"));

    // buildx_build.md, "Create annotations (--annotation)": TAG is `$REG/ann:N`.
    docs.ok(r#"docker buildx build -t $REG/ann:1 --annotation "foo=bar" --push ."#);
    let manifest = docs.raw("ann:1");
    assert_eq!(manifest["annotations"]["foo"], "bar", "{manifest}");
    assert!(manifest["manifests"].is_null(), "{manifest}");

    // An index annotation: buildx's result is an index (its default provenance makes one).
    docs.ok(r#"docker buildx build -t $REG/ann:2 --annotation "index:foo=bar" --push ."#);
    let index = docs.raw("ann:2");
    assert_eq!(index["annotations"]["foo"], "bar", "{index}");
    let entry = &index["manifests"][0];
    assert!(entry["annotations"]["foo"].is_null(), "{index}");
    let manifest = docs.raw(&format!("ann@{}", digest_of(&entry["digest"])));
    assert!(manifest["annotations"]["foo"].is_null(), "{manifest}");

    // Several types at once: the index, its descriptors and the manifests.
    docs.ok(r#"docker buildx build -t $REG/ann:3 --annotation "index,manifest,manifest-descriptor:foo=bar" --push ."#);
    let index = docs.raw("ann:3");
    assert_eq!(index["annotations"]["foo"], "bar", "{index}");
    let entry = &index["manifests"][0];
    assert_eq!(entry["annotations"]["foo"], "bar", "{index}");
    let manifest = docs.raw(&format!("ann@{}", digest_of(&entry["digest"])));
    assert_eq!(manifest["annotations"]["foo"], "bar", "{manifest}");
    assert_eq!(
        manifest["annotations"].as_object().unwrap().len(),
        1,
        "no key named after the list: {manifest}"
    );

    // A platform qualifier: the host's platform is linux/amd64 here.
    docs.ok(r#"docker buildx build -t $REG/ann:4 --annotation "manifest[linux/amd64]:foo=bar" --push ."#);
    assert_eq!(docs.raw("ann:4")["annotations"]["foo"], "bar");
    docs.ok(r#"docker buildx build -t $REG/ann:5 --annotation "manifest[linux/arm64]:foo=bar" --push ."#);
    assert!(docs.raw("ann:5")["annotations"]["foo"].is_null());

    // buildx_build.md, "Set build-time variables (--build-arg)": BUILDKIT_MULTI_PLATFORM
    // makes a build of one platform an index.
    let line = "docker buildx build --build-arg BUILDKIT_MULTI_PLATFORM=1 .";
    let (_, stderr) = docs.ok(line);
    assert!(!stderr.contains("not consumed"), "{stderr}");
    docs.ok(&format!("{line} -t $REG/mp:1 --push"));
    let index = docs.raw("mp:1");
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    assert_eq!(index["manifests"][0]["platform"]["architecture"], "amd64");
    docs.refused(
        "docker buildx build --build-arg BUILDKIT_MULTI_PLATFORM=maybe .",
        "BUILDKIT_MULTI_PLATFORM=maybe: expected true or false",
    );
}

const COPY_DOCKERFILE: &str = "FROM scratch\nCOPY hello.txt /built.txt\n";

/// buildx_build.md "Set the export action for the build result (-o, --output)" and Docker's
/// exporter pages (exporters/_index.md, image-registry.md, oci-docker.md, local-tar.md).
#[test]
fn exporter_lines() {
    let Some(docs) = Docs::start(COPY_DOCKERFILE) else {
        return;
    };
    // buildx_build.md, --output: a path is the local exporter, `-` the tar exporter.
    docs.ok("docker buildx build -o . .");
    assert_eq!(docs.read("ctx/built.txt"), "hello\n");
    docs.ok("docker buildx build -o outdir .");
    assert_eq!(docs.read("ctx/outdir/built.txt"), "hello\n");
    docs.ok("docker buildx build -o - . > out.tar");
    assert_eq!(tar_list(&docs.path("ctx/out.tar")), ["built.txt"]);
    // A docker-archive on stdout, read back by skopeo.
    docs.ok("docker buildx build -o type=docker,dest=- . > myimage.tar");
    let entries = tar_list(&docs.path("ctx/myimage.tar"));
    assert!(entries.contains(&"manifest.json".to_owned()), "{entries:?}");
    let archive = format!("docker-archive:{}", docs.path("ctx/myimage.tar").display());
    let inspected = util::run(Command::new("skopeo").args(["inspect", &archive]));
    assert!(inspected.status.success(), "{}", util::stderr(&inspected));

    // exporters/_index.md, "Export image layout to file": the layout files, read by skopeo.
    docs.ok("docker buildx build --output type=oci,dest=./image.tar .");
    let entries = tar_list(&docs.path("ctx/image.tar"));
    for wanted in ["oci-layout", "index.json"] {
        assert!(entries.contains(&wanted.to_owned()), "{entries:?}");
    }
    let archive = format!("oci-archive:{}", docs.path("ctx/image.tar").display());
    let raw = util::run(Command::new("skopeo").args(["inspect", "--raw", &archive]));
    assert!(raw.status.success(), "{}", util::stderr(&raw));
    let archived: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        archived["layers"].as_array().unwrap().len(),
        1,
        "{archived}"
    );

    // exporters/_index.md, "Export filesystem".
    docs.ok("docker buildx build --output type=local,dest=../path/to/output .");
    assert_eq!(docs.read("path/to/output/built.txt"), "hello\n");

    // exporters/_index.md, "Push to registry": three spellings of one push, one image.
    docs.ok("docker buildx build --tag $REG/image:1 --push .");
    docs.ok("docker buildx build --output type=image,name=$REG/image:2,push=true .");
    docs.ok("docker buildx build --output type=registry,name=$REG/image:3 .");
    let pushed = docs.registry.skopeo_raw("image:1");
    assert_eq!(docs.registry.skopeo_raw("image:2"), pushed);
    assert_eq!(docs.registry.skopeo_raw("image:3"), pushed);

    // exporters/_index.md, "Compression" and "OCI media types".
    docs.ok(
        "docker buildx build --output type=image,name=$REG/image:zstd,push=true,compression=zstd .",
    );
    let manifest = docs.raw("image:zstd");
    assert_eq!(
        manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
        "{manifest}"
    );
    docs.ok("docker buildx build --output type=image,name=$REG/image:oci,push=true,oci-mediatypes=true .");
    assert_eq!(
        docs.raw("image:oci")["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );

    // image-registry.md, "Annotations" (`<type>` registry, `<title>` "xbuild docs").
    docs.ok(r#"docker buildx build --output "type=registry,name=$REG/image:title,annotation.org.opencontainers.image.title=xbuild docs" ."#);
    assert_eq!(
        docs.raw("image:title")["annotations"]["org.opencontainers.image.title"],
        "xbuild docs"
    );

    // oci-docker.md, the `tar` row: `tar=false` writes the layout as a directory, which
    // skopeo reads as `oci:DIR` (the same manifest as the archive's).
    docs.ok("docker buildx build --output type=oci,dest=./oci-dir,tar=false .");
    assert!(docs.path("ctx/oci-dir/oci-layout").is_file());
    let layout = format!("oci:{}", docs.path("ctx/oci-dir").display());
    let raw = util::run(Command::new("skopeo").args(["inspect", "--raw", &layout]));
    assert!(raw.status.success(), "{}", util::stderr(&raw));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&raw.stdout).unwrap(),
        archived
    );
    // A second export into that (now full) directory is refused, nothing mixed or lost.
    let blobs = regenv::layout_blobs(&docs.path("ctx/oci-dir"));
    assert_eq!(blobs.len(), 3, "{blobs:?}");
    let index_json = docs.read("ctx/oci-dir/index.json");
    let output = docs
        .run("docker buildx build --build-arg X=1 --output type=oci,dest=./oci-dir,tar=false .");
    assert!(!output.status.success());
    assert!(
        util::stderr(&output).contains("not empty"),
        "{}",
        util::stderr(&output)
    );
    assert_eq!(regenv::layout_blobs(&docs.path("ctx/oci-dir")), blobs);
    assert_eq!(docs.read("ctx/oci-dir/index.json"), index_json);

    // Refused, each with its reason:
    // oci-docker.md, "dest and tar": xbuild's docker output is a docker-archive file only.
    docs.refused(
        "docker buildx build --output type=docker,dest=./docker-layout,tar=false .",
        "tar=false is not supported yet: type=docker",
    );
    // buildx_build.md, --output: this line has no context, which buildx refuses too.
    docs.refused(
        "docker buildx build -t $REG/tonistiigi/foo -o type=registry",
        "<PATH | URL | ->",
    );
    // exporters/_index.md, "Cache-only export" (the line has no context; buildx needs one
    // too, so ` .` is added).
    docs.refused(
        "docker buildx build --output type=cacheonly .",
        "unknown type \"cacheonly\"",
    );
    // exporters/_index.md, "Multiple exporters": BuildKit has no `tag=` key (it would push
    // the image under no name).
    docs.refused(
        "docker buildx build --output type=registry,tag=$REG/image --output type=local,dest=../multi --load .",
        "BuildKit has no tag= key",
    );
    assert!(!docs.path("multi").exists());
}

const CACHE_DOCKERFILE: &str = "FROM {REG}/busybox:latest\n\
    RUN echo built > /built.txt\n\
    COPY hello.txt /hello.txt\n";

/// buildx_build.md `--cache-from`/`--cache-to` and Docker's cache backend pages
/// (cache/backends/_index.md, registry.md, local.md, inline.md). Each import runs on an
/// empty store (another machine), so a cached RUN comes from the imported cache.
#[test]
fn cache_lines() {
    let Some(docs) = Docs::start(CACHE_DOCKERFILE) else {
        return;
    };
    let reused = |store: &str, line: &str| {
        let (_, stderr) = docs.ok_in(store, line);
        assert!(stderr.contains("0 RUN steps run"), "{line}: {stderr}");
    };

    // buildx_build.md, "Export build cache to an external cache destination (--cache-to)"
    // and "Use an external cache source for a build (--cache-from)".
    docs.ok("docker buildx build --cache-to=$REG/user/app:cache .");
    assert!(docs.tags("user/app").contains(&"cache".to_owned()));
    reused(
        "a",
        "docker buildx build --cache-from=$REG/user/app:cache .",
    );
    reused(
        "b",
        "docker buildx build --cache-from=type=registry,ref=$REG/user/app:cache .",
    );
    // No cache under :latest: a warning, and the build goes on.
    let (_, stderr) = docs.ok_in("c", "docker buildx build --cache-from=$REG/user/app .");
    assert!(stderr.contains("1 RUN steps run"), "{stderr}");
    docs.ok("docker buildx build --cache-to=type=local,dest=../path/to/cache .");
    assert!(docs.path("path/to/cache/index.json").is_file());
    reused(
        "d",
        "docker buildx build --cache-from=type=local,src=../path/to/cache .",
    );

    // inline.md: the cache in the image config, imported from the image itself.
    docs.ok("docker buildx build --push -t $REG/image:inline --cache-to type=inline .");
    assert!(docs.config("image:inline")["moby.buildkit.cache.v0"].is_string());
    reused(
        "e",
        "docker buildx build --push -t $REG/image:inline --cache-from type=registry,ref=$REG/image:inline .",
    );
    let (_, stderr) = docs.ok(
        "docker buildx build --push -t $REG/image:inline-arg --build-arg BUILDKIT_INLINE_CACHE=1 .",
    );
    assert!(!stderr.contains("not consumed"), "{stderr}");
    assert!(docs.config("image:inline-arg")["moby.buildkit.cache.v0"].is_string());
    reused(
        "f",
        "docker buildx build --push -t $REG/image:inline-arg --cache-from type=registry,ref=$REG/image:inline-arg .",
    );

    // _index.md, "Cache mode", "Cache compression", "OCI media types".
    docs.ok("docker buildx build --push -t $REG/image:max --cache-to type=registry,ref=$REG/cache-image:max,mode=max --cache-from type=registry,ref=$REG/cache-image:max .");
    reused(
        "g",
        "docker buildx build --push -t $REG/image:max --cache-from type=registry,ref=$REG/cache-image:max .",
    );
    docs.ok("docker buildx build --push -t $REG/image:zstd --cache-to type=registry,ref=$REG/cache-image:zstd,compression=zstd --cache-from type=registry,ref=$REG/cache-image:zstd .");
    let cache = docs.raw("cache-image:zstd");
    let cache = if cache["manifests"].is_array() {
        docs.raw(&format!(
            "cache-image@{}",
            digest_of(&cache["manifests"][0]["digest"])
        ))
    } else {
        cache
    };
    // The base image's layer keeps its gzip blob (no force-compression, as BuildKit); the
    // layers the build made are zstd.
    let layers = cache["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{cache}");
    assert!(
        layers[1..]
            .iter()
            .all(|layer| layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"),
        "{cache}"
    );
    docs.ok("docker buildx build --push -t $REG/image:im --cache-to type=registry,ref=$REG/cache-image:im,oci-mediatypes=true,image-manifest=true --cache-from type=registry,ref=$REG/cache-image:im .");
    assert_eq!(
        docs.raw("cache-image:im")["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    // _index.md, "Multiple caches" (<branch> is `topic`; main has none yet).
    docs.ok("docker buildx build --push -t $REG/image:topic --cache-to type=registry,ref=$REG/cache-image:topic --cache-from type=registry,ref=$REG/cache-image:topic --cache-from type=registry,ref=$REG/cache-image:main .");
    assert!(docs.tags("cache-image").contains(&"topic".to_owned()));

    // local.md, "Cache versioning": BuildKit's local cache reads `src`, not `ref`.
    docs.refused(
        "docker buildx build --push -t $REG/image:v --cache-to type=local,dest=path/to/local/dir --cache-from type=local,ref=path/to/local/dir,digest=sha256:6982c70595cb91769f61cd1e064cf5f41d5357387bab6b18c0164c5f98c1f707 .",
        "the directory is src=DIR",
    );
}

/// Docker's ci/github-actions/multi-platform.md, "Distribute build across multiple
/// runners": each platform pushed by digest on a runner of its own (a store each), the
/// digest taken from the metadata file, then the index made with `imagetools create` from
/// the digest files, as the workflow's shell steps do.
#[test]
fn multi_runner_recipe() {
    let Some(docs) = Docs::start(COPY_DOCKERFILE) else {
        return;
    };
    for (runner, platform) in [("amd64", "linux/amd64"), ("arm64", "linux/arm64")] {
        // The build step (build-push-action's command line) and "Export digest".
        docs.ok_in(
            runner,
            &format!(
                "docker buildx build --platform {platform} --label org.opencontainers.image.source=https://example.com/app --output type=image,name=$REG/user/app,push-by-digest=true,name-canonical=true,push=true --metadata-file ../{runner}.json . && \
                 mkdir -p ../digests && digest=$(jq -r '.\"containerimage.digest\"' ../{runner}.json) && touch \"../digests/${{digest#sha256:}}\""
            ),
        );
    }
    // Pushed by digest only: no tag but the `sha256-<hex>` tags of the referrers fallback
    // (buildx's default provenance of a push; docker-registry has no referrers API).
    let tags = docs.tags("user/app");
    assert!(
        tags.iter().all(|tag| tag.starts_with("sha256-")),
        "pushed by digest only: {tags:?}"
    );
    let (_, stderr) = docs.ok_in(
        "merge",
        "cd ../digests && docker buildx imagetools create -t $REG/user/app:latest -t $REG/user/app:1.0 $(printf \"$REG/user/app@sha256:%s \" *)",
    );
    let index = docs.raw("user/app:1.0");
    let mut platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            entry["platform"]["architecture"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["amd64", "arm64"], "{index}\n{stderr}");
    assert_eq!(
        docs.registry.skopeo_raw("user/app:latest"),
        docs.registry.skopeo_raw("user/app:1.0")
    );
    // Each platform's label, through the index.
    for entry in index["manifests"].as_array().unwrap() {
        let config = docs.config(&format!("user/app@{}", digest_of(&entry["digest"])));
        assert_eq!(
            config["config"]["Labels"]["org.opencontainers.image.source"],
            "https://example.com/app"
        );
    }
    // "Inspect image".
    let (stdout, _) = docs.ok_in(
        "merge",
        "docker buildx imagetools inspect $REG/user/app:1.0",
    );
    assert!(stdout.contains("Platform:  linux/arm64"), "{stdout}");
    assert!(stdout.contains("Platform:  linux/amd64"), "{stdout}");
}

/// buildx_imagetools_create.md and buildx_imagetools_inspect.md.
#[test]
fn imagetools_lines() {
    let Some(docs) = Docs::start(COPY_DOCKERFILE) else {
        return;
    };
    docs.registry
        .skopeo_push_fixture("foo/bar:alpha", Some("amd64"));
    docs.registry
        .skopeo_push_fixture("foo/bar:beta", Some("arm64"));
    docs.registry
        .skopeo_push_fixture("foo/bar:gamma", Some("s390x"));

    // create.md, "Add annotations to an image (--annotation)".
    docs.ok(r#"docker buildx imagetools create \
  --annotation "index:org.opencontainers.image.authors=dvdksn" \
  --tag $REG/foo/bar:latest \
  $REG/foo/bar:alpha $REG/foo/bar:beta $REG/foo/bar:gamma"#);
    let index = docs.raw("foo/bar:latest");
    assert_eq!(
        index["annotations"]["org.opencontainers.image.authors"], "dvdksn",
        "{index}"
    );
    assert_eq!(index["manifests"].as_array().unwrap().len(), 3, "{index}");

    // create.md, "Read source descriptor from a file (-f, --file)": buildx's second line
    // has no --tag, and buildx refuses it so; xbuild does the same.
    docs.ok(r#"docker buildx imagetools inspect --raw $REG/foo/bar:latest | jq '.manifests[0] | .platform."os.version"="10.1"' > descr.json"#);
    let output = docs.run("docker buildx imagetools create -f descr.json myuser/image");
    assert_eq!(output.status.code(), Some(2));
    assert!(util::stderr(&output).contains("can't push with no tags specified"));
    // The same file with a tag of the descriptor's repository: the descriptor's manifest,
    // with the platform the file gives, `os.version` included (oci-spec 0.10 misreads that
    // key, so xbuild carries it beside it: `registry::tools::PlatformExtras`).
    docs.ok("docker buildx imagetools create -f descr.json -t $REG/foo/bar:osv");
    let made = docs.raw("foo/bar:osv");
    assert_eq!(
        made["manifests"][0]["digest"], index["manifests"][0]["digest"],
        "{made}"
    );
    assert_eq!(
        made["manifests"][0]["platform"]["architecture"], "amd64",
        "{made}"
    );
    assert_eq!(
        made["manifests"][0]["platform"]["os.version"], "10.1",
        "{made}"
    );
    // And an index holding it, combined with another source, keeps it too.
    docs.ok(
        "docker buildx imagetools create -t $REG/foo/bar:osv2 $REG/foo/bar:osv $REG/foo/bar:gamma",
    );
    let combined = docs.raw("foo/bar:osv2");
    assert_eq!(
        combined["manifests"].as_array().unwrap().len(),
        2,
        "{combined}"
    );
    assert_eq!(
        combined["manifests"][0]["platform"]["os.version"], "10.1",
        "{combined}"
    );
    assert!(
        combined["manifests"][1]["platform"]
            .get("os.version")
            .is_none(),
        "{combined}"
    );

    // create.md, "Set reference for new image (-t, --tag)": a digest of the same repository
    // as a source; --dry-run prints the index and pushes nothing.
    let alpha = regenv::digest_of(&docs.registry.skopeo_raw("foo/bar:alpha"));
    let beta = regenv::digest_of(&docs.registry.skopeo_raw("foo/bar:beta"));
    let (stdout, _) = docs.ok(&format!(
        "docker buildx imagetools create --dry-run $REG/foo/bar@{alpha} {beta}"
    ));
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let digests: Vec<&str> = printed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests, [alpha.as_str(), beta.as_str()]);
    docs.write(
        "ctx/image1",
        &format!("{}/foo/bar:alpha\n", docs.registry.host),
    );
    docs.write(
        "ctx/image2",
        &format!("{}/foo/bar@{beta}\n", docs.registry.host),
    );
    docs.ok("docker buildx imagetools create -t $REG/tonistiigi/myapp -f image1 -f image2");
    assert_eq!(
        docs.raw("tonistiigi/myapp")["manifests"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // create.md, "Write create result metadata to a file (--metadata-file)".
    docs.ok("docker buildx imagetools create -t $REG/user/app:latest -f image1 -f image2 --metadata-file metadata.json");
    let metadata: serde_json::Value =
        serde_json::from_str(&docs.read("ctx/metadata.json")).unwrap();
    assert_eq!(
        metadata["containerimage.descriptor"]["digest"],
        regenv::digest_of(&docs.registry.skopeo_raw("user/app:latest")),
        "{metadata}"
    );

    // inspect.md: the text, --format and --raw.
    let (stdout, _) = docs.ok("docker buildx imagetools inspect $REG/foo/bar:latest");
    assert!(
        stdout.contains("Manifests:") && stdout.contains("Platform:  linux/s390x"),
        "{stdout}"
    );
    let (stdout, _) =
        docs.ok(r#"docker buildx imagetools inspect $REG/foo/bar:latest --format "{{.Name}}""#);
    assert_eq!(
        stdout.trim(),
        format!("{}/foo/bar:latest", docs.registry.host)
    );
    let (stdout, _) = docs.ok(
        r#"docker buildx imagetools inspect $REG/foo/bar:latest --format "{{json .Manifest}}""#,
    );
    let manifest: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        manifest["digest"],
        regenv::digest_of(&docs.registry.skopeo_raw("foo/bar:latest"))
    );
    let (stdout, _) = docs
        .ok(r#"docker buildx imagetools inspect $REG/foo/bar:latest --format "{{json .Image}}""#);
    let images: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(images["linux/arm64"]["architecture"], "arm64", "{images}");
    let (stdout, _) = docs.ok(r#"docker buildx imagetools inspect --format '{{json (index .Image "linux/s390x")}}' $REG/foo/bar:latest"#);
    let image: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let gamma = docs.config("foo/bar:gamma");
    assert_eq!(image["architecture"], "s390x", "{image}");
    assert_eq!(image["rootfs"], gamma["rootfs"], "{image}");
    let (stdout, _) = docs.ok("docker buildx imagetools inspect --raw $REG/foo/bar:latest | jq");
    let raw: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(raw, index);
}

/// buildx_prune.md and buildx_du.md, on a store holding cache records and a cache mount.
#[test]
fn prune_and_du_lines() {
    let Some(docs) = Docs::start(
        "FROM {REG}/busybox:latest\n\
         RUN --mount=type=cache,target=/cache echo kept > /cache/kept && echo built > /built.txt\n",
    ) else {
        return;
    };
    docs.ok("docker buildx build .");
    // buildx_du.md: the table and --verbose.
    let (stdout, _) = docs.ok("docker buildx du");
    assert!(
        stdout.contains("Cache mounts") || stdout.contains("cache mount"),
        "{stdout}"
    );
    let (stdout, _) = docs.ok("docker buildx du --verbose");
    assert!(
        stdout.contains("Type:          exec.cachemount"),
        "{stdout}"
    );
    assert!(stdout.contains("Type:          regular"), "{stdout}");

    // buildx_prune.md, "Filtering (--filter)".
    let both = |(stdout, stderr): (String, String)| stdout + &stderr;
    let stdout = both(docs.ok(r#"docker buildx prune --filter "until=24h""#));
    assert!(
        stdout.contains("Removed 0 cache records, 0 cache mounts"),
        "{stdout}"
    );
    docs.ok(r#"docker buildx prune --filter "type=source.local""#);
    let stdout = both(docs.ok(r#"docker buildx prune --filter "type!=exec.cachemount""#));
    assert!(!stdout.contains("Removed 0 cache records"), "{stdout}");
    assert!(stdout.contains(", 0 cache mounts"), "{stdout}");
    let (stdout, _) = docs.ok("docker buildx du --verbose");
    assert!(
        stdout.contains("Type:          exec.cachemount"),
        "{stdout}"
    );
    assert!(!stdout.contains("Type:          regular"), "{stdout}");
    // Refused: xbuild's records have no description or parents to match.
    docs.refused(
        r#"docker buildx prune --filter "description~=golang""#,
        "unknown filter \"description~\"",
    );
    docs.refused(
        r#"docker buildx prune --filter "parents=dpetmoi6n0yqanxjqrbnofz9n;kgoj0q6g57i35gdyrv546alz7""#,
        "unknown filter \"parents\"",
    );
    // buildx_du.md's --format is not supported yet (clap's usage error).
    docs.refused("docker buildx du --format=json", "--format");
}
