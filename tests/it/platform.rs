//! One platform type, one answer: every spelling of every platform in `platforms/` (its
//! canonical name and each alias, with and without `linux/`, in upper case) means the same
//! platform through every entry point: each subcommand's `--platform`, `FROM --platform=`,
//! a build node's platforms, the choice of a manifest from an index (the registry's, for a
//! `FROM` and a pull, and `run`'s), the cache's platform key, and a real pull from a
//! registry that skopeo filled with an index holding a Windows entry.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use clap::Parser as _;
use xbuild::cli::args::{Cli, Command};
use xbuild::cli::debug::DebugCommand;
use xbuild::oci::{Descriptor, ImageLayout, MediaType};
use xbuild::platform::{self, Platform, catalog};
use xbuild::registry::{ImageRef, PlatformChoice};

use crate::regenv::{self, Setup, TestRegistry};
use crate::util;

/// Every spelling of every platform of the table, with the platform it means.
fn spellings() -> Vec<(String, Platform)> {
    let mut all = Vec::new();
    for info in catalog::all() {
        let expected = info.platform();
        let canonical = if info.variant.is_empty() {
            info.architecture.clone()
        } else {
            format!("{}/{}", info.architecture, info.variant)
        };
        for name in std::iter::once(&canonical).chain(&info.aliases) {
            all.push((name.clone(), expected.clone()));
            all.push((format!("linux/{name}"), expected.clone()));
            all.push((format!("LINUX/{}", name.to_uppercase()), expected.clone()));
        }
    }
    all
}

fn command(args: &[&str]) -> Command {
    Cli::try_parse_from(std::iter::once("xbuild").chain(args.iter().copied()))
        .unwrap_or_else(|error| panic!("{args:?}: {error}"))
        .command
}

/// What each subcommand makes of `--platform TEXT` (and the other platform arguments).
fn every_flag(text: &str) -> Vec<(&'static str, Vec<Platform>)> {
    let mut seen = Vec::new();
    let Command::Build(build) = command(&["build", "--platform", text, "."]) else {
        unreachable!()
    };
    seen.push(("build", build.targets().unwrap()));
    let Command::Check(check) = command(&["check", "--platform", text, "."]) else {
        unreachable!()
    };
    seen.push(("check", check.targets().unwrap()));
    let debug = |subcommand| {
        let argv = [
            "debug",
            subcommand,
            "--platform",
            text,
            "--build-platform",
            text,
            "Dockerfile",
        ];
        let Command::Debug(debug) = command(&argv) else {
            unreachable!()
        };
        debug.command
    };
    let DebugCommand::Plan(plan) = debug("plan") else {
        unreachable!()
    };
    let (targets, build_platform) = plan.platforms().unwrap();
    seen.push(("debug plan --platform", targets));
    seen.push(("debug plan --build-platform", vec![build_platform]));
    let DebugCommand::Stages(stages) = debug("stages") else {
        unreachable!()
    };
    let (target, build_platform) = stages.platforms().unwrap();
    seen.push(("debug stages --platform", vec![target]));
    seen.push(("debug stages --build-platform", vec![build_platform]));
    let Command::Pull(pull) = command(&["pull", "--platform", text, "busybox"]) else {
        unreachable!()
    };
    let PlatformChoice::One(pulled) = pull.choice().unwrap() else {
        panic!("pull --platform {text}: not one platform")
    };
    seen.push(("pull", vec![pulled]));
    let Command::Run(run) = command(&["run", "--platform", text, "busybox"]) else {
        unreachable!()
    };
    seen.push(("run", vec![run.wanted_platform().unwrap()]));
    let Command::Inspect(inspect) = command(&["inspect", "--platform", text, "busybox"]) else {
        unreachable!()
    };
    seen.push((
        "inspect",
        inspect.wanted_platform().unwrap().into_iter().collect(),
    ));
    let Command::History(history) = command(&["history", "--platform", text, "busybox"]) else {
        unreachable!()
    };
    seen.push((
        "history",
        history.wanted_platform().unwrap().into_iter().collect(),
    ));
    let Command::Save(save) = command(&["save", "--platform", text, "-o", "x.tar", "busybox"])
    else {
        unreachable!()
    };
    seen.push((
        "save",
        save.wanted_platform().unwrap().into_iter().collect(),
    ));
    let Command::Import(import) = command(&["import", "--platform", text, "rootfs.tar", "x:1"])
    else {
        unreachable!()
    };
    seen.push(("import", vec![import.wanted_platform().unwrap()]));
    let Command::Binfmt(binfmt) = command(&["binfmt", "install", text]) else {
        unreachable!()
    };
    let xbuild::cli::binfmt::BinfmtCommand::Install { platforms } = binfmt.command else {
        unreachable!()
    };
    seen.push((
        "binfmt install",
        xbuild::cli::binfmt::targets(&platforms).unwrap(),
    ));
    let node = xbuild::nodes::Node::parse("n0", &format!("{text}=ssh://node.example")).unwrap();
    seen.push(("builder create --node", node.platforms));
    let tree = xbuild::dockerfile::parse(&format!("FROM --platform={text} scratch\n")).unwrap();
    let stages = xbuild::dockerfile::stages(&tree).unwrap();
    let graph = xbuild::plan::for_targets(
        &stages,
        &xbuild::plan::PlanOptions {
            targets: vec![platform::host()],
            build_platform: platform::host(),
            build_args: BTreeMap::new(),
            target_stage: None,
            named_contexts: BTreeMap::new(),
            base_triggers: BTreeMap::new(),
            multi_platform: false,
        },
    )
    .unwrap();
    seen.push((
        "FROM --platform=",
        graph.vertices.iter().map(|v| v.platform.clone()).collect(),
    ));
    seen
}

#[test]
fn every_alias_is_the_same_platform_for_every_flag() {
    let all = spellings();
    assert!(all.len() > 90, "{} spellings", all.len());
    for (text, expected) in &all {
        assert_eq!(&Platform::parse(text).unwrap(), expected, "{text}");
        for (entry_point, platforms) in every_flag(text) {
            assert_eq!(
                platforms,
                std::slice::from_ref(expected),
                "{entry_point} with {text}"
            );
        }
    }
}

#[test]
fn other_operating_systems_are_refused_by_every_flag_with_exit_2() {
    for text in ["windows/amd64", "darwin/arm64", "linux/sparc64"] {
        let Command::Pull(pull) = command(&["pull", "--platform", text, "busybox"]) else {
            unreachable!()
        };
        let error = pull.choice().unwrap_err();
        assert_eq!(xbuild::error::exit_kind(&error), xbuild::ExitKind::BadInput);
        let Command::Import(import) = command(&["import", "--platform", text, "r.tar", "x:1"])
        else {
            unreachable!()
        };
        let error = import.wanted_platform().unwrap_err();
        assert_eq!(xbuild::error::exit_kind(&error), xbuild::ExitKind::BadInput);
        let Command::Build(build) = command(&["build", "--platform", text, "."]) else {
            unreachable!()
        };
        assert!(build.targets().is_err(), "{text}");
    }
}

/// An OCI index (written as raw JSON, not by xbuild) with one empty image per platform of
/// the table, in reverse order (so an exact match must beat a compatible one listed earlier),
/// after a Windows amd64 image and an attestation-like `unknown/unknown` entry. Returns the
/// index descriptor and each table platform's manifest digest.
fn index_of_every_platform(layout: &ImageLayout) -> (Descriptor, BTreeMap<Platform, String>) {
    let mut entries = Vec::new();
    let mut digests = BTreeMap::new();
    let mut image = |platform_json: String| {
        let config = format!(r#"{{{platform_json},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#);
        let (config, config_size) = layout.write_blob(config.as_bytes()).unwrap();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[]}}"#
        );
        let (digest, size) = layout.write_blob(manifest.as_bytes()).unwrap();
        entries.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{size},"platform":{{{platform_json}}}}}"#
        ));
        digest.to_string()
    };
    image(r#""architecture":"amd64","os":"windows","os.version":"10.0.20348.2227""#.to_owned());
    image(r#""architecture":"unknown","os":"unknown""#.to_owned());
    for info in catalog::all().iter().rev() {
        let variant = if info.variant.is_empty() {
            String::new()
        } else {
            format!(r#","variant":"{}""#, info.variant)
        };
        let digest = image(format!(
            r#""architecture":"{}","os":"{}"{variant}"#,
            info.architecture, info.os
        ));
        digests.insert(info.platform(), digest);
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        entries.join(",")
    );
    let (digest, size) = layout.write_blob(index.as_bytes()).unwrap();
    (
        Descriptor::new(MediaType::ImageIndex, size, digest),
        digests,
    )
}

#[test]
fn every_alias_picks_the_same_manifest_from_an_index_for_from_and_run() {
    let dir = util::temp_dir();
    let store = xbuild::store::Store::open(dir.path().join("store")).unwrap();
    let (index, digests) = index_of_every_platform(store.layout());
    let reference = ImageRef::parse("127.0.0.1:5000/every/platform:1").unwrap();
    store
        .layout()
        .set_ref(&reference.store_name(), &index)
        .unwrap();
    for (text, expected) in spellings() {
        let wanted = Platform::parse(&text).unwrap();
        // The registry module's choice, as a FROM makes it from the store.
        let image = xbuild::registry::pull::local_image(store.layout(), &reference, &wanted)
            .unwrap()
            .unwrap_or_else(|| panic!("FROM for {text}: no image"));
        assert_eq!(
            image.manifest.digest().to_string(),
            digests[&expected],
            "FROM for {text}"
        );
        assert_eq!(image.platform.as_ref(), Some(&expected), "FROM for {text}");
        // `xbuild run --platform`.
        let found = xbuild::container::find_local(
            &store,
            &reference,
            "127.0.0.1:5000/every/platform:1",
            &wanted,
            true,
        )
        .unwrap()
        .unwrap_or_else(|| panic!("run for {text}: no image"));
        assert_eq!(
            found.descriptor.digest().to_string(),
            digests[&expected],
            "run for {text}"
        );
        assert_eq!(
            xbuild::container::image_platform(&found).unwrap(),
            expected,
            "run for {text}"
        );
    }
}

/// Index entries may spell a platform any way the table knows (`aarch64`, `arm64/v8`,
/// `x86_64`): the registry's choice finds each for the canonical platform, past a Windows
/// entry of the same architecture.
#[test]
fn index_entries_spelled_with_an_alias_are_found() {
    let dir = util::temp_dir();
    let layout = ImageLayout::open_or_create(dir.path().join("store")).unwrap();
    let mut checked = 0;
    for info in catalog::all() {
        for alias in &info.aliases {
            let (architecture, variant) = match alias.split_once('/') {
                Some((architecture, variant)) => {
                    (architecture, format!(r#","variant":"{variant}""#))
                }
                None => (alias.as_str(), String::new()),
            };
            let config = format!(
                r#"{{"architecture":"{architecture}","os":"linux"{variant},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
            );
            let (config, config_size) = layout.write_blob(config.as_bytes()).unwrap();
            let manifest = format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[]}}"#
            );
            let (digest, size) = layout.write_blob(manifest.as_bytes()).unwrap();
            let index = format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{size},"platform":{{"architecture":"{}","os":"windows"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{size},"platform":{{"architecture":"{architecture}","os":"linux"{variant}}}}}]}}"#,
                info.architecture
            );
            let (index, index_size) = layout.write_blob(index.as_bytes()).unwrap();
            let reference = ImageRef::parse("127.0.0.1:5000/alias:1").unwrap();
            layout
                .set_ref(
                    &reference.store_name(),
                    &Descriptor::new(MediaType::ImageIndex, index_size, index),
                )
                .unwrap();
            let image = xbuild::registry::pull::local_image(&layout, &reference, &info.platform())
                .unwrap()
                .unwrap_or_else(|| panic!("{alias}: not found for {}", info.platform()));
            assert_eq!(image.platform, Some(info.platform()), "{alias}");
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked} aliases");
}

#[test]
fn every_alias_reads_the_same_cache_records() {
    let dir = util::temp_dir();
    let store = xbuild::store::Store::open(dir.path().join("store")).unwrap();
    let options = Arc::new(xbuild::registry::RegistryOptions::from_env(
        &dir.path().join("store"),
    ));
    let location = xbuild::cache::CacheLocation::local(dir.path().join("cache"));
    let records = catalog::all()
        .iter()
        .map(|info| xbuild::cache::Record {
            key: format!("key of {}", info.platform()),
            platform: info.platform(),
            layers: Vec::new(),
            state: serde_json::json!({}),
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(xbuild::cache::export(
            Arc::clone(&options),
            store.layout(),
            &xbuild::cache::CacheExport::new(location.clone(), xbuild::cache::CacheMode::Max),
            records,
        ))
        .unwrap();
    // The annotation each manifest carries is the canonical name.
    let written = ImageLayout::open(dir.path().join("cache")).unwrap();
    let top = written.resolve_ref("latest").unwrap().unwrap();
    let index: xbuild::oci::ImageIndex = written.read_json(top.digest(), "index").unwrap();
    let annotations = index
        .manifests()
        .iter()
        .map(|entry| {
            entry.annotations().as_ref().unwrap()[xbuild::cache::PLATFORM_ANNOTATION].clone()
        })
        .collect::<Vec<_>>();
    let mut canonical = catalog::all()
        .iter()
        .map(|info| info.platform().to_string())
        .collect::<Vec<_>>();
    canonical.sort();
    assert_eq!(annotations, canonical);
    for (text, expected) in spellings() {
        let wanted = Platform::parse(&text).unwrap();
        let imported = runtime
            .block_on(xbuild::cache::import(
                Arc::clone(&options),
                &location,
                &[wanted],
            ))
            .unwrap()
            .unwrap();
        let keys = imported
            .records
            .iter()
            .map(|record| record.key.clone())
            .collect::<Vec<_>>();
        assert_eq!(keys, [format!("key of {expected}")], "cache for {text}");
    }
}

/// The index above, pushed by skopeo (which reads it back with its Windows entry), pulled by
/// `xbuild pull --platform` in every spelling: the same manifest each time; without
/// `--platform` the host's, the Windows entry skipped, not an error.
#[test]
fn every_alias_pulls_the_same_manifest_from_a_registry() {
    if !regenv::ready(Setup::Plain) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    let dir = util::temp_dir();
    let source = ImageLayout::open_or_create(dir.path().join("source")).unwrap();
    let (index, digests) = index_of_every_platform(&source);
    source.set_ref("every", &index).unwrap();
    let copied = util::run(&mut registry.skopeo(
        &[
            "copy",
            "--quiet",
            "--all",
            &format!("oci:{}:every", dir.path().join("source").display()),
            &format!("docker://{}/every/platform:1", registry.direct),
        ],
        &["dest"],
    ));
    assert!(copied.status.success(), "{}", util::stderr(&copied));
    let raw: serde_json::Value =
        serde_json::from_slice(&registry.skopeo_raw("every/platform:1")).unwrap();
    let manifests = raw["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), catalog::all().len() + 2);
    assert_eq!(manifests[0]["platform"]["os"], "windows");

    let home = util::temp_dir();
    let name = format!("{}/every/platform:1", registry.host);
    let pull = |platform: Option<&str>| {
        let mut command = registry.xbuild(home.path());
        command.arg("pull");
        if let Some(platform) = platform {
            command.args(["--platform", platform]);
        }
        util::run(command.arg(&name))
    };
    let output = pull(None);
    assert!(output.status.success(), "{}", util::stderr(&output));
    let host = platform::host();
    assert!(
        util::stdout(&output).ends_with(&format!("{host} {}\n", digests[&host])),
        "{}",
        util::stdout(&output)
    );
    for (text, expected) in spellings()
        .into_iter()
        .filter(|(text, _)| text.starts_with("linux/"))
    {
        let output = pull(Some(&text));
        assert!(output.status.success(), "{text}: {}", util::stderr(&output));
        assert!(
            util::stdout(&output).ends_with(&format!("{expected} {}\n", digests[&expected])),
            "{text}: {}",
            util::stdout(&output)
        );
    }
    let output = pull(Some("windows/amd64"));
    assert_eq!(output.status.code(), Some(2), "{}", util::stderr(&output));
}
