//! `compression-level` and `force-compression` end to end, judged by skopeo, umoci, tar,
//! gzip and zstd (never by xbuild reading its own output; umoci 0.4 reads no zstd, so
//! skopeo turns zstd images into gzip ones for it): each level gives its own
//! reproducible bytes of the same tar (on any number of threads, never a blob of another
//! level from the store), and `force-compression=true` recompresses a gzip base image's
//! layers to zstd with their diff_ids unchanged.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::path::Path;
use std::process::{Command, Output};

use crate::util::{self, Need};

/// `xbuild build` with a store of its own (`dir/<home>/store`), on `dir/ctx`.
fn build(dir: &Path, home: &str, threads: Option<&str>, args: &[&str]) -> Output {
    let mut command = util::xbuild(&dir.join(home));
    if let Some(threads) = threads {
        command.env("XBUILD_COMPRESS_THREADS", threads);
    }
    util::run(
        command
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "--progress", "plain"])
            .args(args)
            .arg(dir.join("ctx")),
    )
}

fn ok(output: &Output) {
    assert!(output.status.success(), "{}", util::stderr(output));
}

fn json(output: &Output) -> serde_json::Value {
    ok(output);
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `skopeo inspect` of `reference` with `args` (`--raw`, `--config`, `--override-arch`).
fn skopeo(args: &[&str], reference: &str) -> serde_json::Value {
    json(&util::run(
        Command::new("skopeo")
            .arg("inspect")
            .args(args)
            .arg(reference),
    ))
}

/// A blob of an OCI archive, read with tar.
fn archive_blob(archive: &Path, digest: &str) -> Vec<u8> {
    let output = util::run(
        Command::new("tar")
            .arg("-xOf")
            .arg(archive)
            .arg(format!("blobs/sha256/{}", &digest["sha256:".len()..])),
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    output.stdout
}

/// sha256 of what `program -dc` makes of `bytes` (gzip or zstd): the layer's diff_id.
fn decompressed_digest(program: &str, bytes: &[u8]) -> String {
    let dir = util::temp_dir();
    let file = dir.path().join("blob");
    std::fs::write(&file, bytes).unwrap();
    let output = util::run(
        Command::new("sh")
            .arg("-c")
            .arg(format!("{program} -dc < '{}' | sha256sum", file.display())),
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    format!(
        "sha256:{}",
        util::stdout(&output).split_whitespace().next().unwrap()
    )
}

/// The one layer of the single-platform image in `archive`: (media type, digest, size).
fn only_layer(archive: &Path) -> (String, String, u64) {
    let manifest = skopeo(&["--raw"], &format!("oci-archive:{}", archive.display()));
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    (
        layers[0]["mediaType"].as_str().unwrap().to_owned(),
        layers[0]["digest"].as_str().unwrap().to_owned(),
        layers[0]["size"].as_u64().unwrap(),
    )
}

/// Text that compresses differently at each level: several gzip blocks of it.
fn compressible(length: usize) -> String {
    let words = [
        "layer", "digest", "level", "zstd", "gzip", "block", "tar", "index",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut text = String::with_capacity(length + 16);
    while text.len() < length {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(words[(state % 8) as usize]);
        text.push(if state % 11 == 0 { '\n' } else { ' ' });
    }
    text
}

/// gzip levels 1, 6 (default) and 9 and zstd levels 3 (default) and 19 of one `COPY`
/// layer: the same diff_id (checked by decompressing with gzip and zstd), different
/// blobs, level 9 the smallest gzip; the same bytes in a fresh store and on one
/// compressing thread; a store holding a level's blob does not give it to another level;
/// zstd 19 unpacked by umoci; levels an algorithm does not take refused before any work.
#[test]
fn each_compression_level_has_its_own_reproducible_blob() {
    if !util::require(&[
        Need::Root,
        Need::Program("skopeo"),
        Need::Program("umoci"),
        Need::Program("tar"),
        Need::Program("gzip"),
        Need::Program("zstd"),
    ]) {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    let context = dir.join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY data.txt /data.txt\n",
    )
    .unwrap();
    std::fs::write(context.join("data.txt"), compressible(3 << 20)).unwrap();
    let archive = |name: &str| dir.join(format!("{name}.tar"));
    let oci = |name: &str, keys: &str| format!("type=oci,dest={},{keys}", archive(name).display());

    // One store for every level, the slow one first: nothing made at one level may be
    // reused for another.
    ok(&build(
        dir,
        "a",
        None,
        &["-o", &oci("gzip9", "compression=gzip,compression-level=9")],
    ));
    ok(&build(
        dir,
        "a",
        None,
        &["-o", &oci("gzip1", "compression-level=1")],
    ));
    ok(&build(
        dir,
        "a",
        None,
        &["-o", &oci("gzip6", "compression=gzip")],
    ));
    ok(&build(
        dir,
        "a",
        None,
        &[
            "-o",
            &oci("zstd19", "compression=zstd,compression-level=19"),
        ],
    ));
    ok(&build(
        dir,
        "a",
        None,
        &["-o", &oci("zstd3", "compression=zstd")],
    ));
    let layers: Vec<(String, String, u64)> = ["gzip9", "gzip1", "gzip6", "zstd19", "zstd3"]
        .iter()
        .map(|name| only_layer(&archive(name)))
        .collect();
    let config = skopeo(
        &["--config"],
        &format!("oci-archive:{}", archive("gzip9").display()),
    );
    let diff_id = config["rootfs"]["diff_ids"][0].as_str().unwrap().to_owned();
    for (name, (media_type, digest, size)) in ["gzip9", "gzip1", "gzip6", "zstd19", "zstd3"]
        .iter()
        .zip(&layers)
    {
        let blob = archive_blob(&archive(name), digest);
        assert_eq!(blob.len() as u64, *size, "{name}");
        let program = if name.starts_with("gzip") {
            assert_eq!(
                media_type, "application/vnd.oci.image.layer.v1.tar+gzip",
                "{name}"
            );
            "gzip"
        } else {
            assert_eq!(
                media_type, "application/vnd.oci.image.layer.v1.tar+zstd",
                "{name}"
            );
            "zstd"
        };
        assert_eq!(
            decompressed_digest(program, &blob),
            diff_id,
            "{name}: the same tar"
        );
        let config = skopeo(
            &["--config"],
            &format!("oci-archive:{}", archive(name).display()),
        );
        assert_eq!(config["rootfs"]["diff_ids"][0], diff_id.as_str(), "{name}");
    }
    let digests: Vec<&str> = layers
        .iter()
        .map(|(_, digest, _)| digest.as_str())
        .collect();
    let mut distinct = digests.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        digests.len(),
        "each level its own blob: {digests:?}"
    );
    let (gzip9, gzip1, gzip6) = (layers[0].2, layers[1].2, layers[2].2);
    assert!(
        gzip9 < gzip1 && gzip9 <= gzip6,
        "sizes at 9, 1, 6: {gzip9} {gzip1} {gzip6}"
    );
    // gzip's extra flags byte says "slowest" at level 9, "fastest" at level 1.
    assert_eq!(archive_blob(&archive("gzip9"), &layers[0].1)[8], 2);
    assert_eq!(archive_blob(&archive("gzip1"), &layers[1].1)[8], 4);

    // A fresh store on one compressing thread makes the same blobs at level 9 and zstd
    // 19, and its default gzip is the one store "a" made after level 9.
    for (name, keys, index) in [
        ("fresh-gzip9", "compression=gzip,compression-level=9", 0),
        ("fresh-zstd19", "compression=zstd,compression-level=19", 3),
        ("fresh-gzip6", "compression=gzip", 2),
    ] {
        ok(&build(dir, "b", Some("1"), &["-o", &oci(name, keys)]));
        assert_eq!(only_layer(&archive(name)), layers[index], "{name}");
    }

    // umoci unpacks the zstd 19 image to the file that was copied.
    let layout = dir.join("layout");
    // (umoci 0.4 reads no zstd: skopeo decompresses it, with its own zstd reader, into gzip.)
    let copied = util::run(Command::new("skopeo").args([
        "copy",
        "--dest-compress",
        "--dest-compress-format",
        "gzip",
        &format!("oci-archive:{}", archive("zstd19").display()),
        &format!("oci:{}:x", layout.display()),
    ]));
    ok(&copied);
    let bundle = dir.join("bundle");
    let unpacked = util::run(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:x", layout.display()))
            .arg(&bundle),
    );
    ok(&unpacked);
    assert!(
        std::fs::read(bundle.join("rootfs/data.txt")).unwrap()
            == std::fs::read(context.join("data.txt")).unwrap()
    );

    // Levels the algorithm does not take: bad input, before any work.
    for (keys, message) in [
        (
            "compression=gzip,compression-level=10",
            "compression-level=10: gzip takes 0 to 9",
        ),
        (
            "compression=zstd,compression-level=23",
            "compression-level=23: zstd takes",
        ),
        (
            "compression=uncompressed,compression-level=3",
            "uncompressed layers have no level",
        ),
        (
            "compression-level=fast",
            "compression-level=fast: expected an integer",
        ),
    ] {
        let refused = build(dir, "c", None, &["-o", &oci("refused", keys)]);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{keys}: {}",
            util::stderr(&refused)
        );
        assert!(
            util::stderr(&refused).contains(message),
            "{keys}: {}",
            util::stderr(&refused)
        );
        assert!(!archive("refused").exists());
        assert!(
            !util::stderr(&refused).contains("COPY"),
            "{keys}: refused before any step"
        );
    }
}

/// `force-compression=true` on the gzip busybox fixture, both platforms: every layer of
/// the result is zstd, the base layers' diff_ids are the fixture's, umoci unpacks busybox
/// byte for byte; the bytes are the same in a fresh store on one thread. Without it the
/// base layers keep their gzip blobs, as in BuildKit.
#[test]
fn force_compression_converts_the_base_image_layers() {
    if !util::require(&[
        Need::Root,
        Need::Fixtures,
        Need::Program("skopeo"),
        Need::Program("umoci"),
        Need::Program("tar"),
        Need::Program("zstd"),
    ]) {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    let context = dir.join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    std::fs::write(context.join("hello.txt"), "hello\n").unwrap();
    for home in ["a", "b"] {
        std::fs::create_dir_all(dir.join(home)).unwrap();
        crate::build::store_with_fixtures(&dir.join(home));
    }
    let fixture = crate::regenv::fixture_layout();
    let busybox = crate::regenv::busybox();
    let platforms = [("linux/amd64", "amd64"), ("linux/arm64", "arm64")];
    let archive = |name: &str| dir.join(format!("{name}.tar"));
    let build_to = |home: &str, threads: Option<&str>, name: &str, keys: &str| {
        ok(&build(
            dir,
            home,
            threads,
            &[
                "--platform",
                "linux/amd64,linux/arm64",
                "-o",
                &format!("type=oci,dest={},{keys}", archive(name).display()),
            ],
        ));
    };
    // Each platform's manifest in an archive, read with tar.
    let manifests = |name: &str| -> Vec<serde_json::Value> {
        let index = skopeo(
            &["--raw"],
            &format!("oci-archive:{}", archive(name).display()),
        );
        platforms
            .iter()
            .map(|(platform, arch)| {
                let entry = index["manifests"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|entry| entry["platform"]["architecture"] == *arch)
                    .unwrap_or_else(|| panic!("{platform} in {index}"));
                serde_json::from_slice(&archive_blob(
                    &archive(name),
                    entry["digest"].as_str().unwrap(),
                ))
                .unwrap()
            })
            .collect()
    };

    build_to(
        "a",
        None,
        "forced",
        "compression=zstd,force-compression=true",
    );
    let forced = manifests("forced");
    for ((platform, arch), manifest) in platforms.iter().zip(&forced) {
        let base = crate::regenv::json_blob(&fixture, &busybox.platforms[*platform]);
        let base_config =
            crate::regenv::json_blob(&fixture, base["config"]["digest"].as_str().unwrap());
        let config = skopeo(
            &["--config", "--override-arch", arch],
            &format!("oci-archive:{}", archive("forced").display()),
        );
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        assert_eq!(diff_ids.len(), 2, "{config}");
        assert_eq!(
            diff_ids[0], base_config["rootfs"]["diff_ids"][0],
            "{platform}: base diff_id"
        );
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2, "{manifest}");
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            assert_eq!(
                layer["mediaType"],
                "application/vnd.oci.image.layer.v1.tar+zstd"
            );
            let blob = archive_blob(&archive("forced"), layer["digest"].as_str().unwrap());
            assert_eq!(
                decompressed_digest("zstd", &blob),
                diff_id.as_str().unwrap()
            );
        }
        assert_ne!(
            layers[0]["digest"], base["layers"][0]["digest"],
            "{platform}: converted"
        );
        // umoci unpacks the converted image: busybox byte for byte, and the copied file.
        let layout = dir.join(format!("layout-{arch}"));
        // (umoci 0.4 reads no zstd: skopeo decompresses it into gzip.)
        ok(&util::run(Command::new("skopeo").args([
            "copy",
            "--dest-compress",
            "--dest-compress-format",
            "gzip",
            "--override-arch",
            arch,
            &format!("oci-archive:{}", archive("forced").display()),
            &format!("oci:{}:x", layout.display()),
        ])));
        let bundle = dir.join(format!("bundle-{arch}"));
        ok(&util::run(
            Command::new("umoci")
                .args(["unpack", "--rootless", "--image"])
                .arg(format!("{}:x", layout.display()))
                .arg(&bundle),
        ));
        let fixture_busybox = util::fixtures_dir()
            .unwrap()
            .join(format!("rootfs/busybox/linux-{arch}/bin/busybox"));
        assert!(
            std::fs::read(bundle.join("rootfs/bin/busybox")).unwrap()
                == std::fs::read(fixture_busybox).unwrap(),
            "{platform}: busybox"
        );
        assert_eq!(
            std::fs::read_to_string(bundle.join("rootfs/hello.txt")).unwrap(),
            "hello\n"
        );
    }

    // The same bytes from a fresh store on one compressing thread.
    build_to(
        "b",
        Some("1"),
        "forced-again",
        "compression=zstd,force-compression=true",
    );
    assert_eq!(manifests("forced-again"), forced);

    // Without force-compression the base layers keep their gzip blobs; the built one is
    // zstd.
    build_to("a", None, "kept", "compression=zstd");
    for (((platform, _), manifest), forced) in platforms.iter().zip(manifests("kept")).zip(&forced)
    {
        let base = crate::regenv::json_blob(&fixture, &busybox.platforms[*platform]);
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(
            layers[0], base["layers"][0],
            "{platform}: the base layer as pulled"
        );
        assert_eq!(
            layers[1], forced["layers"][1],
            "{platform}: the built layer, zstd"
        );
    }
}

/// A cache export with its own compression: the image's layer is gzip, the cache's the
/// same tar at zstd level 7 (the blob a zstd 7 image of a fresh store has), read back by
/// skopeo and zstd.
#[test]
fn a_cache_export_has_its_own_compression() {
    if !util::require(&[
        Need::Root,
        Need::Program("skopeo"),
        Need::Program("tar"),
        Need::Program("zstd"),
    ]) {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    let context = dir.join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY data.txt /data.txt\n",
    )
    .unwrap();
    std::fs::write(context.join("data.txt"), compressible(1 << 20)).unwrap();
    let image = dir.join("image.tar");
    let cache = dir.join("cache");
    ok(&build(
        dir,
        "a",
        None,
        &[
            "-o",
            &format!("type=oci,dest={},compression=gzip", image.display()),
            "--cache-to",
            &format!(
                "type=local,dest={},compression=zstd,compression-level=7",
                cache.display()
            ),
        ],
    ));
    let (media_type, _, _) = only_layer(&image);
    assert_eq!(media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
    let config = skopeo(&["--config"], &format!("oci-archive:{}", image.display()));
    let diff_id = config["rootfs"]["diff_ids"][0].as_str().unwrap().to_owned();

    // The cache's manifests (an index of one per platform, read by skopeo) name the layer
    // at zstd 7.
    let top = skopeo(&["--raw"], &format!("oci:{}:latest", cache.display()));
    let manifest_digest = top["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            cache
                .join("blobs/sha256")
                .join(&manifest_digest["sha256:".len()..]),
        )
        .unwrap(),
    )
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let digest = layers[0]["digest"].as_str().unwrap();
    let blob = std::fs::read(cache.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap();
    assert_eq!(decompressed_digest("zstd", &blob), diff_id);

    let zstd7 = dir.join("zstd7.tar");
    ok(&build(
        dir,
        "b",
        None,
        &[
            "-o",
            &format!(
                "type=oci,dest={},compression=zstd,compression-level=7",
                zstd7.display()
            ),
        ],
    ));
    assert_eq!(only_layer(&zstd7).1, digest, "the zstd 7 blob of that tar");
}

/// A layer the build made keeps the blob it was written with in its cache record (here the
/// layer of a `--build-context` directory, which is written at once): a cached rebuild at
/// another compression or level still gets the layer at that one, decompressing to the
/// same diff_id (before, the cached gzip level 6 blob came back whatever was asked).
#[test]
fn a_cached_layer_is_exported_at_the_compression_asked_for() {
    if !util::require(&[
        Need::Root,
        Need::Program("skopeo"),
        Need::Program("tar"),
        Need::Program("zstd"),
    ]) {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    let context = dir.join("ctx");
    let base = dir.join("base");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(context.join("Dockerfile"), "FROM base\n").unwrap();
    std::fs::write(base.join("data.txt"), compressible(1 << 20)).unwrap();
    let named = format!("base={}", base.display());
    let export = |name: &str, keys: &str| {
        let archive = dir.join(name);
        let output = build(
            dir,
            "a",
            None,
            &[
                "--build-context",
                &named,
                "-o",
                &format!("type=oci,dest={}{keys}", archive.display()),
            ],
        );
        ok(&output);
        (only_layer(&archive), archive, util::stderr(&output))
    };
    let ((gzip_type, gzip6, _), gzip_archive, _) = export("gzip6.tar", "");
    assert_eq!(gzip_type, "application/vnd.oci.image.layer.v1.tar+gzip");
    let diff_id = decompressed_digest("gzip", &archive_blob(&gzip_archive, &gzip6));

    let ((zstd_type, zstd, _), zstd_archive, log) = export("zstd.tar", ",compression=zstd");
    assert!(log.contains("CACHED"), "the rebuild is cached:\n{log}");
    assert_eq!(zstd_type, "application/vnd.oci.image.layer.v1.tar+zstd");
    assert_eq!(
        decompressed_digest("zstd", &archive_blob(&zstd_archive, &zstd)),
        diff_id
    );

    let ((gzip9_type, gzip9, _), gzip9_archive, _) =
        export("gzip9.tar", ",compression=gzip,compression-level=9");
    assert_eq!(gzip9_type, gzip_type);
    assert_ne!(gzip9, gzip6, "level 9 is not the cached level 6 blob");
    assert_eq!(
        decompressed_digest("gzip", &archive_blob(&gzip9_archive, &gzip9)),
        diff_id
    );
    // And the default again: the level 6 blob, the same bytes as the first build's.
    let ((_, again, _), _, _) = export("again.tar", "");
    assert_eq!(again, gzip6);
}

/// The numbers of "R of M gzip blocks reused" lines in a build's plain progress.
fn reused_blocks(output: &Output) -> Vec<(u64, u64)> {
    let text = format!("{}{}", util::stdout(output), util::stderr(output));
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.windows(5).position(|window| {
                window[1] == "of" && window[3] == "gzip" && window[4] == "blocks"
            })?;
            Some((words[at].parse().ok()?, words[at + 2].parse().ok()?))
        })
        .collect()
}

/// A rebuild after a one-file edit of a big `COPY . /app` layer copies the gzip blocks it
/// already has (progress says how many: nearly all), and the blob is the one a build on
/// an empty store makes: skopeo reads the image, `gzip -dc | sha256sum` is its diff_id,
/// umoci unpacks the edited file. `store check` verifies the block maps, `du` counts
/// them, and prune removes them with their blobs.
#[test]
fn a_one_file_edit_reuses_the_other_gzip_blocks() {
    if !util::require(&[
        Need::Root,
        Need::Program("skopeo"),
        Need::Program("umoci"),
        Need::Program("gzip"),
    ]) {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    let context = dir.join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("Dockerfile"), "FROM scratch\nCOPY . /app\n").unwrap();
    // About 6 MB in 24 files (48 gzip blocks), the edited one in the middle.
    let text = compressible(6 << 20);
    for index in 0..24 {
        let part = &text[index * (256 << 10)..(index + 1) * (256 << 10)];
        std::fs::write(context.join(format!("f{index:02}.txt")), part).unwrap();
    }
    std::fs::write(context.join("f11.txt"), "the middle file\n".repeat(60)).unwrap();
    let store = dir.join("a").join("store");
    // The store names images as Docker does (`app:2` is `docker.io/library/app:2`).
    let image = |name: &str| format!("oci:{}:docker.io/library/{name}", store.display());

    let first = build(dir, "a", None, &["-t", "app:1"]);
    ok(&first);
    let (reused, blocks) = *reused_blocks(&first).first().expect("a reuse count");
    assert_eq!(reused, 0, "nothing to reuse in an empty store");
    assert!(blocks >= 45, "{blocks} blocks");

    // Grows by a few bytes inside the tar's padding: every other block is the same.
    let mut edited = std::fs::read_to_string(context.join("f11.txt")).unwrap();
    edited.push_str("edited\n");
    std::fs::write(context.join("f11.txt"), &edited).unwrap();
    let second = build(dir, "a", None, &["-t", "app:2"]);
    ok(&second);
    let (reused, blocks) = *reused_blocks(&second).first().expect("a reuse count");
    assert!(
        reused + 3 >= blocks && blocks >= 45,
        "{reused} of {blocks} blocks reused\n{}",
        util::stderr(&second)
    );

    // skopeo: one gzip layer whose decompressed bytes are the diff_id.
    let manifest = skopeo(&["--raw"], &image("app:2"));
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let config = skopeo(&["--config"], &image("app:2"));
    let diff_id = config["rootfs"]["diff_ids"][0].as_str().unwrap().to_owned();
    let blob = std::fs::read(
        store
            .join("blobs")
            .join("sha256")
            .join(&layer["sha256:".len()..]),
    )
    .unwrap();
    assert_eq!(decompressed_digest("gzip", &blob), diff_id);

    // The blob a build on an empty store makes of the edited context.
    let fresh = build(dir, "b", None, &["-t", "app:2"]);
    ok(&fresh);
    assert_eq!(reused_blocks(&fresh).first().map(|count| count.0), Some(0));
    let fresh_manifest = skopeo(
        &["--raw"],
        &format!(
            "oci:{}:docker.io/library/app:2",
            dir.join("b").join("store").display()
        ),
    );
    assert_eq!(fresh_manifest["layers"][0]["digest"], layer.as_str());

    // umoci unpacks the edited file.
    let bundle = dir.join("bundle");
    ok(&util::run(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:docker.io/library/app:2", store.display()))
            .arg(&bundle),
    ));
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs").join("app").join("f11.txt")).unwrap(),
        edited
    );

    // One block map per gzip layer blob; store check verifies them, du counts them.
    let xbuild = || util::xbuild(&dir.join("a"));
    let maps = || std::fs::read_dir(store.join("blocks")).unwrap().count();
    assert_eq!(maps(), 2);
    let check = util::run(xbuild().args(["store", "check"]));
    ok(&check);
    assert!(
        util::stdout(&check).contains("2 block maps"),
        "{}",
        util::stdout(&check)
    );
    let du = util::run(xbuild().arg("du"));
    ok(&du);
    assert!(
        util::stdout(&du).contains("Gzip block maps"),
        "{}",
        util::stdout(&du)
    );
    // A damaged map is reported, and builds do not use it.
    let map = store.join("blocks").join(&layer["sha256:".len()..]);
    let mut bytes = std::fs::read(&map).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&map, &bytes).unwrap();
    let check = util::run(xbuild().args(["store", "check"]));
    assert!(!check.status.success());
    assert!(
        util::stdout(&check).contains("block map") || util::stderr(&check).contains("block map"),
        "{}{}",
        util::stdout(&check),
        util::stderr(&check)
    );
    // prune removes the damaged map; removing the images and pruning removes the others
    // with their blobs.
    ok(&util::run(xbuild().args(["prune", "--all", "--force"])));
    assert_eq!(maps(), 1, "the damaged map goes, app:1's stays");
    ok(&util::run(xbuild().args(["rmi", "app:1", "app:2"])));
    ok(&util::run(xbuild().args(["prune", "--all", "--force"])));
    assert_eq!(maps(), 0);
    ok(&util::run(xbuild().args(["store", "check"])));
}
