//! The build's attestations ([`crate::attest::options::Attestations`]): after the images are
//! built and before the outputs are written, each platform's image is scanned from its
//! layers (the store's snapshots, read as a stack, not mounted) into an SPDX in-toto
//! statement, its provenance is written from what the build was asked and did, and both are
//! attached to that platform's manifest as referrers in the store. The outputs that carry
//! referrers (a push, an OCI archive, the store's names) take them from there. With
//! `attestation-layout=buildx` they go into a new index instead, beside the images, as
//! BuildKit writes them (one attestation manifest per platform); that index is then the
//! build's result, and every output carries them as part of the image. A build with
//! several sets of manifests (outputs of different layer compressions) gets them for each
//! set, each statement about that set's manifest; an image's SBOM is scanned once.

use std::collections::HashMap;

use super::{BuildError, BuildRequest};
use crate::attest::options::{Attestations, Layout};
use crate::attest::provenance::{self, BuildRecord, SecretId};
use crate::attest::spdx::{self, DocumentInfo};
use crate::attest::{self, Encoded, Kind, StatementVersion};
use crate::executor::{BuildReport, Built, ContextRead, ExtraRoot, Material};
use crate::export::{MediaTypes, Output};
use crate::oci::{image, referrers};
use crate::platform::Platform;
use crate::remote::vcs;
use crate::sbom::{self, Root};
use crate::store::{Store, normalize_ref};

/// The first output that has no place for referrers, when the request asked for
/// attestations (buildx's default provenance of a push is not a reason to refuse).
pub(crate) fn refuse_outputs(request: &BuildRequest) -> Result<(), BuildError> {
    if !request.attestations.asked() {
        return Ok(());
    }
    let lost = request.outputs.iter().find_map(|output| match output {
        Output::Store {
            media_types: MediaTypes::Docker,
        }
        | Output::Registry {
            media_types: MediaTypes::Docker,
            ..
        }
        | Output::Oci {
            media_types: MediaTypes::Docker,
            ..
        } => {
            Some("oci-mediatypes=false (BuildKit refuses attestations with Docker media types too)")
        }
        Output::Store { .. } | Output::Registry { .. } | Output::Oci { .. } => None,
        Output::Docker { dest: Some(_), .. } => Some("type=docker (a docker-archive)"),
        Output::Docker { dest: None, .. } => Some("--load (the Docker engine)"),
        Output::Containerd { .. } => Some("type=containerd (containerd 1.6 keeps no referrers)"),
        Output::Local { .. } => Some("type=local"),
        Output::Tar { .. } => Some("type=tar"),
    });
    match lost {
        Some(output) => Err(BuildError::AttestationsLost { output }),
        None => Ok(()),
    }
}

/// Makes and attaches the request's attestations for every platform's image; returns how
/// many were attached. With [`Layout::Buildx`] the report's index is replaced by one that
/// also lists the attestation manifests, and it is the build's result.
pub(crate) fn attach(
    request: &BuildRequest,
    dockerfile: &[u8],
    report: &mut BuildReport,
    store: &Store,
    started: i64,
) -> Result<usize, BuildError> {
    let wanted: Attestations = request.attestations;
    if wanted.is_empty() {
        return Ok(0);
    }
    let options = &request.build;
    let epoch = options.source_date_epoch;
    let finished = attest::unix_now();
    let created = attest::clamped_time(finished, epoch);
    let names: Vec<String> = request.tags.iter().map(|tag| normalize_ref(tag)).collect();
    let document_name = names.first().cloned().unwrap_or_else(|| "image".to_owned());
    let platforms: Vec<String> = options.targets.iter().map(ToString::to_string).collect();
    let invocation = invocation_request(request, dockerfile);
    let invocation_id = provenance::invocation_id(epoch, &invocation);
    let context = match (&wanted.provenance, &report.context) {
        (Some(_), Some(read)) => Some(context_record(read)?),
        _ => None,
    };
    let mut attached = 0;
    // Each platform's scans, made once and stated about the manifest of every set (the
    // sets differ only in their layers' compression).
    let mut scans: HashMap<Platform, Vec<(Option<String>, sbom::Scan)>> = HashMap::new();
    for set in 0..=report.more_sets.len() {
        let images = report
            .set(set)
            .map(|built| built.images.clone())
            .unwrap_or_default();
        let mut in_index = Vec::new();
        for built in &images {
            let platform = built.platform.to_string();
            let subject = subject_descriptor(&built.manifest);
            let subjects = attest::image_subjects(&names, &platform, built.manifest.digest());
            let mut encoded = Vec::new();
            if wanted.sbom {
                if !scans.contains_key(&built.platform) {
                    let made = scan_platform(report, store, &subject, &built.platform)?;
                    scans.insert(built.platform.clone(), made);
                }
                // The image's own, then BUILDKIT_SBOM_SCAN_STAGE / _CONTEXT: one more SBOM per
                // stage or context, each its own statement about the image (buildx shows them
                // as AdditionalSPDXs).
                for (extra, scan) in scans.get(&built.platform).into_iter().flatten() {
                    let name = match extra {
                        None => document_name.clone(),
                        Some(extra) => format!("{document_name}/sbom-{extra}"),
                    };
                    let info = DocumentInfo {
                        name: &name,
                        created: &created,
                        tool: &spdx::tool_name(),
                    };
                    let statement =
                        spdx::statement(scan, &info, subjects.clone(), StatementVersion::V01);
                    encoded.push(match extra {
                        None => Encoded::new(Kind::Sbom, &statement),
                        Some(extra) => Encoded::new(Kind::Sbom, &statement).extra(extra),
                    });
                }
            }
            if let Some(wanted) = wanted.provenance {
                let sources = Sources::of(report, &built.platform);
                let record = BuildRecord {
                    mode: wanted.mode,
                    dockerfile_path: dockerfile_path(options),
                    // Written with mode=max only (the provenance module leaves it out otherwise).
                    dockerfile: Some(String::from_utf8_lossy(dockerfile).into_owned()),
                    target: options.target_stage.clone(),
                    build_args: options.build_args.clone(),
                    labels: options.labels.clone(),
                    platforms: platforms.clone(),
                    platform: platform.clone(),
                    builder_platform: crate::platform::host().to_string(),
                    base_images: sources.images,
                    context: context.clone(),
                    http: sources.http,
                    git: sources.git,
                    named_contexts: sources.named_contexts,
                    secrets: options
                        .secrets
                        .keys()
                        .map(|id| SecretId {
                            id: id.clone(),
                            optional: false,
                        })
                        .collect(),
                    ssh: options
                        .ssh
                        .keys()
                        .map(|id| SecretId {
                            id: id.clone(),
                            optional: false,
                        })
                        .collect(),
                    steps: report
                        .steps
                        .get(&built.platform)
                        .cloned()
                        .unwrap_or_default(),
                    network: !options.network_none,
                    reproducible: false,
                    builder_id: provenance::DEFAULT_BUILDER_ID.to_owned(),
                    invocation_id: invocation_id.clone(),
                    started,
                    finished,
                    source_date_epoch: epoch,
                };
                let statement = provenance::statement(
                    &record,
                    wanted.version,
                    subjects.clone(),
                    StatementVersion::V01,
                );
                encoded.push(Encoded::new(Kind::Provenance, &statement));
            }
            attached += encoded.len();
            match wanted.layout {
                Layout::Referrers => {
                    for statement in &encoded {
                        store
                            .attach_referrer(&subject, &statement.artifact(&created))
                            .map_err(|error| BuildError::Attest(error.into()))?;
                    }
                }
                Layout::Buildx { oci_artifact } => {
                    let statements: Vec<referrers::InIndexStatement<'_>> = encoded
                        .iter()
                        .map(|statement| referrers::InIndexStatement {
                            bytes: &statement.bytes,
                            predicate_type: &statement.predicate_type,
                        })
                        .collect();
                    let entry = referrers::write_in_index_attestation(
                        store.layout(),
                        &subject,
                        &statements,
                        oci_artifact,
                    )
                    .map_err(|error| BuildError::Attest(error.into()))?;
                    in_index.push(entry);
                }
            }
        }
        if !in_index.is_empty() {
            let built = match set {
                0 => &mut report.built,
                n => &mut report.more_sets[n - 1],
            };
            with_in_index(store, built, in_index)?;
        }
    }
    Ok(attached)
}

/// The SBOM scans of `platform`'s image (`subject`, its layers read from the store's
/// snapshots) and of the stages and context its build scans besides
/// ([`BuildReport::sbom_extras`], each with its name).
fn scan_platform(
    report: &BuildReport,
    store: &Store,
    subject: &oci_spec::image::Descriptor,
    platform: &Platform,
) -> Result<Vec<(Option<String>, sbom::Scan)>, BuildError> {
    let resolved = image::resolve_image(store.layout(), subject, None)
        .map_err(|error| BuildError::Attest(error.into()))?;
    let mut layers = store
        .ensure_snapshots(&resolved)
        .map_err(|error| BuildError::Attest(error.into()))?;
    // Snapshots come bottom first; a stack is read top first.
    layers.reverse();
    let mut scans = vec![(
        None,
        sbom::scan(&Root::Layers(&layers)).map_err(|error| BuildError::Attest(error.into()))?,
    )];
    for extra in report.sbom_extras.get(platform).into_iter().flatten() {
        let scan = match &extra.root {
            ExtraRoot::Layers(layers) => sbom::scan(&Root::Layers(layers)),
            ExtraRoot::Dir(dir) => sbom::scan(&Root::Dir(dir)),
            ExtraRoot::Scanned(scan) => Ok(scan.as_ref().clone()),
        }
        .map_err(|error| BuildError::Attest(error.into()))?;
        scans.push((Some(extra.name.clone()), scan));
    }
    Ok(scans)
}

/// Replaces `built`'s index with one that lists `attestations` after the images (as
/// BuildKit orders them), keeping the index's annotations and its descriptor's; the index
/// is then the result even for one platform (BuildKit makes an index whenever there are
/// attestations).
fn with_in_index(
    store: &Store,
    built: &mut Built,
    attestations: Vec<oci_spec::image::Descriptor>,
) -> Result<(), BuildError> {
    let attest_error = |error: crate::oci::ImageError| BuildError::Attest(error.into());
    let mut index =
        image::read_index(store.layout(), built.index.digest()).map_err(attest_error)?;
    let mut manifests = index.manifests().clone();
    manifests.extend(attestations);
    index.set_manifests(manifests);
    let mut descriptor = image::write_json_blob(
        store.layout(),
        oci_spec::image::MediaType::ImageIndex,
        &index,
    )
    .map_err(|error| BuildError::Attest(error.into()))?;
    descriptor.set_annotations(built.index.annotations().clone());
    built.index = descriptor;
    built.explicit_platforms = true;
    Ok(())
}

/// What `platform`'s image was built from, as the provenance lists it: the images its build
/// resolved, the files `ADD` fetched, the git repositories `ADD` checked out (each in the
/// executor's stable order).
#[derive(Default)]
struct Sources {
    images: Vec<provenance::BaseImage>,
    http: Vec<provenance::HttpSource>,
    git: Vec<provenance::GitSource>,
    named_contexts: Vec<provenance::NamedContext>,
}

impl Sources {
    fn of(report: &BuildReport, platform: &Platform) -> Self {
        let mut sources = Self::default();
        for material in report.materials.get(platform).into_iter().flatten() {
            match material {
                Material::Image {
                    reference,
                    platform,
                    digest,
                } => sources.images.push(provenance::BaseImage {
                    reference: reference.clone(),
                    platform: platform.to_string(),
                    digest: digest.clone(),
                    local: false,
                }),
                Material::Http { url, digest } => sources.http.push(provenance::HttpSource {
                    url: url.clone(),
                    sha256: digest.trim_start_matches("sha256:").to_owned(),
                }),
                Material::Git { url, commit } => sources.git.push(provenance::GitSource {
                    url: Some(url.clone()),
                    commit: commit.clone(),
                }),
                Material::Context { name, digest } => {
                    sources.named_contexts.push(provenance::NamedContext {
                        name: name.clone(),
                        sha256: digest.trim_start_matches("sha256:").to_owned(),
                    });
                }
            }
        }
        sources
    }
}

/// The context the build read: its digest after `.dockerignore`, and the commit when it is
/// a clean git checkout.
fn context_record(read: &ContextRead) -> Result<provenance::Context, BuildError> {
    let digest = read
        .digest()
        .map_err(|error| BuildError::Attest(error.into()))?;
    let git = vcs::clean_checkout(read.dir()).map(|checkout| provenance::GitSource {
        url: checkout.remote,
        commit: checkout.commit,
    });
    Ok(provenance::Context {
        sha256: digest.trim_start_matches("sha256:").to_owned(),
        git,
    })
}

/// What the build was asked, as bytes for a derived invocation id.
fn invocation_request(request: &BuildRequest, dockerfile: &[u8]) -> Vec<u8> {
    let options = &request.build;
    let mut bytes = dockerfile.to_vec();
    let mut push = |text: &str| {
        bytes.push(0);
        bytes.extend_from_slice(text.as_bytes());
    };
    push(&dockerfile_path(options));
    push(options.target_stage.as_deref().unwrap_or(""));
    for platform in &options.targets {
        push(&platform.to_string());
    }
    for (key, value) in &options.build_args {
        push(key);
        push(value);
    }
    for tag in &request.tags {
        push(tag);
    }
    bytes
}

/// The Dockerfile's path as given, relative to the context when it is inside.
fn dockerfile_path(options: &crate::executor::BuildOptions) -> String {
    options
        .dockerfile
        .strip_prefix(&options.context)
        .unwrap_or(&options.dockerfile)
        .display()
        .to_string()
}

/// A manifest's descriptor as a subject: media type, digest, size.
fn subject_descriptor(descriptor: &oci_spec::image::Descriptor) -> oci_spec::image::Descriptor {
    oci_spec::image::Descriptor::new(
        descriptor.media_type().clone(),
        descriptor.size(),
        descriptor.digest().clone(),
    )
}
