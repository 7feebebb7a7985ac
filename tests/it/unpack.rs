//! Safe unpacking: a generated corpus of hostile tars, each refused, with a check that
//! nothing outside the target directory changed.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use xbuild::layer::{ApplyError, ApplyOptions, WhiteoutMode, apply_layer};

/// A raw tar builder that writes whatever names and types it is told (the `tar` crate's
/// own setters refuse `..` and absolute paths, which is what we need to produce here).
#[derive(Default)]
struct RawTar {
    bytes: Vec<u8>,
}

impl RawTar {
    fn header(&mut self, name: &[u8], kind: u8, size: u64, link: &[u8]) -> &mut Self {
        let mut header = tar::Header::new_ustar();
        let short = &name[..name.len().min(100)];
        header.as_old_mut().name[..short.len()].copy_from_slice(short);
        let link = &link[..link.len().min(100)];
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        header.set_entry_type(tar::EntryType::new(kind));
        header.set_mode(0o644);
        header.set_size(size);
        header.set_mtime(0);
        header.set_cksum();
        self.bytes.extend_from_slice(header.as_bytes());
        self
    }

    fn data(&mut self, data: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(data);
        let padding = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, padding));
        self
    }

    fn file(&mut self, name: &[u8], content: &[u8]) -> &mut Self {
        self.header(name, b'0', content.len() as u64, b"")
            .data(content)
    }

    fn dir(&mut self, name: &[u8]) -> &mut Self {
        self.header(name, b'5', 0, b"")
    }

    fn symlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.header(name, b'2', 0, target)
    }

    fn hardlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.header(name, b'1', 0, target)
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (key, value) in records {
            let rest = key.len() + value.len() + 3;
            let mut length = rest + 1;
            while length != rest + length.to_string().len() {
                length = rest + length.to_string().len();
            }
            body.extend_from_slice(format!("{length} {key}=").as_bytes());
            body.extend_from_slice(value);
            body.push(b'\n');
        }
        self.header(b"PaxHeaders/x", b'x', body.len() as u64, b"")
            .data(&body)
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.extend(std::iter::repeat_n(0u8, 1024));
        bytes
    }
}

/// Path, type, mode, size and content of everything under `dir` except `skip`.
fn survey(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path == skip {
                continue;
            }
            let meta = fs::symlink_metadata(&path).unwrap();
            let mut description = format!("{:o} {} {}", meta.mode(), meta.uid(), meta.len());
            if meta.file_type().is_symlink() {
                description += &format!(" -> {:?}", fs::read_link(&path).unwrap());
            } else if meta.is_file() {
                description += &format!(" {:?}", fs::read(&path).unwrap());
            } else if meta.is_dir() {
                stack.push(path.clone());
            }
            found.insert(path, description);
        }
    }
    found
}

struct Sandbox {
    _dir: tempfile::TempDir,
    surrounding: PathBuf,
    target: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let dir = crate::util::temp_dir();
        let surrounding = dir.path().join("s");
        let target = surrounding.join("target");
        fs::create_dir_all(&target).unwrap();
        fs::write(surrounding.join("outside"), "original").unwrap();
        fs::create_dir(surrounding.join("keep")).unwrap();
        fs::write(surrounding.join("keep").join("file"), "kept").unwrap();
        Self {
            _dir: dir,
            surrounding,
            target,
        }
    }

    fn outside_abs(&self) -> Vec<u8> {
        self.surrounding
            .join("outside")
            .to_str()
            .unwrap()
            .as_bytes()
            .to_vec()
    }

    fn surrounding_abs(&self) -> Vec<u8> {
        self.surrounding.to_str().unwrap().as_bytes().to_vec()
    }
}

fn options() -> ApplyOptions {
    ApplyOptions {
        whiteouts: WhiteoutMode::Merge,
        // Device nodes are refused as they would be for a non-root user, whoever runs this.
        allow_devices: false,
        set_owners: false,
        exact: false,
    }
}

type Case = (&'static str, Box<dyn Fn(&Sandbox) -> Vec<Vec<u8>>>);

fn one(tar: Vec<u8>) -> Vec<Vec<u8>> {
    vec![tar]
}

fn corpus() -> Vec<Case> {
    vec![
        (
            "absolute path",
            Box::new(|s: &Sandbox| {
                one(RawTar::default().file(&s.outside_abs(), b"pwned").finish())
            }),
        ),
        (
            "dot-dot",
            Box::new(|_: &Sandbox| one(RawTar::default().file(b"../outside", b"pwned").finish())),
        ),
        (
            "dot-dot inside",
            Box::new(|_: &Sandbox| {
                one(RawTar::default()
                    .file(b"a/../../outside", b"pwned")
                    .finish())
            }),
        ),
        (
            "dot-slash dot-dot",
            Box::new(|_: &Sandbox| one(RawTar::default().file(b"./../outside", b"pwned").finish())),
        ),
        (
            "deep dot-dot",
            Box::new(|_: &Sandbox| {
                one(RawTar::default()
                    .dir(b"a/")
                    .dir(b"a/b/")
                    .file(b"a/b/../../../outside", b"pwned")
                    .finish())
            }),
        ),
        (
            "dot-dot directory",
            Box::new(|_: &Sandbox| one(RawTar::default().dir(b"../newdir/").finish())),
        ),
        (
            "absolute symlink then write",
            Box::new(|s: &Sandbox| {
                one(RawTar::default()
                    .symlink(b"l", &s.surrounding_abs())
                    .file(b"l/outside", b"pwned")
                    .finish())
            }),
        ),
        (
            "relative symlink then write",
            Box::new(|_: &Sandbox| {
                one(RawTar::default()
                    .symlink(b"l", b"..")
                    .file(b"l/outside", b"pwned")
                    .finish())
            }),
        ),
        (
            "symlink to root then mkdir",
            Box::new(|_: &Sandbox| {
                one(RawTar::default()
                    .symlink(b"l", b"/")
                    .dir(b"l/xbuild-escape-dir/")
                    .finish())
            }),
        ),
        (
            "symlink chain",
            Box::new(|_: &Sandbox| {
                one(RawTar::default()
                    .symlink(b"a", b"b")
                    .symlink(b"b", b"..")
                    .file(b"a/outside", b"pwned")
                    .finish())
            }),
        ),
        (
            "nested symlink",
            Box::new(|_: &Sandbox| {
                one(RawTar::default()
                    .dir(b"d/")
                    .symlink(b"d/l", b"../..")
                    .file(b"d/l/outside", b"pwned")
                    .finish())
            }),
        ),
        (
            "symlink through symlink",
            Box::new(|s: &Sandbox| {
                one(RawTar::default()
                    .symlink(b"l", &s.surrounding_abs())
                    .symlink(b"l/evil", b"/etc")
                    .finish())
            }),
        ),
        (
            "hardlink through symlink",
            Box::new(|s: &Sandbox| {
                one(RawTar::default()
                    .file(b"f", b"x")
                    .symlink(b"l", &s.surrounding_abs())
                    .hardlink(b"l/evil", b"f")
                    .finish())
            }),
        ),
        (
            "hardlink absolute target",
            Box::new(|s: &Sandbox| {
                one(RawTar::default().hardlink(b"h", &s.outside_abs()).finish())
            }),
        ),
        (
            "hardlink dot-dot target",
            Box::new(|_: &Sandbox| one(RawTar::default().hardlink(b"h", b"../outside").finish())),
        ),
        (
            "hardlink target through symlink",
            Box::new(|s: &Sandbox| {
                one(RawTar::default()
                    .symlink(b"l", &s.surrounding_abs())
                    .hardlink(b"h", b"l/outside")
                    .finish())
            }),
        ),
        (
            "hardlink then write through it",
            Box::new(|_: &Sandbox| {
                one(RawTar::default()
                    .hardlink(b"h", b"../outside")
                    .file(b"h", b"pwned")
                    .finish())
            }),
        ),
        (
            "hardlink to missing target",
            Box::new(|_: &Sandbox| one(RawTar::default().hardlink(b"h", b"nothing").finish())),
        ),
        (
            "char device",
            Box::new(|_: &Sandbox| one(RawTar::default().header(b"dev", b'3', 0, b"").finish())),
        ),
        (
            "block device",
            Box::new(|_: &Sandbox| one(RawTar::default().header(b"disk", b'4', 0, b"").finish())),
        ),
        (
            "duplicate entry replaced by symlink",
            Box::new(|s: &Sandbox| {
                one(RawTar::default()
                    .file(b"x", b"1")
                    .symlink(b"x", &s.surrounding_abs())
                    .file(b"x/outside", b"pwned")
                    .finish())
            }),
        ),
        (
            "duplicate file",
            Box::new(|_: &Sandbox| {
                one(RawTar::default().file(b"x", b"1").file(b"x", b"2").finish())
            }),
        ),
        (
            "pax path dot-dot",
            Box::new(|_: &Sandbox| {
                one(RawTar::default()
                    .pax(&[("path", b"../outside")])
                    .file(b"innocent", b"pwned")
                    .finish())
            }),
        ),
        (
            "pax path absolute",
            Box::new(|s: &Sandbox| {
                let path = s.outside_abs();
                one(RawTar::default()
                    .pax(&[("path", &path)])
                    .file(b"innocent", b"pwned")
                    .finish())
            }),
        ),
        (
            "pax linkpath escape",
            Box::new(|s: &Sandbox| {
                let target = s.surrounding_abs();
                one(RawTar::default()
                    .pax(&[("linkpath", &target)])
                    .symlink(b"l", b"harmless")
                    .file(b"l/outside", b"pwned")
                    .finish())
            }),
        ),
        (
            "gnu long name dot-dot",
            Box::new(|_: &Sandbox| {
                let mut name = b"../".to_vec();
                name.extend(std::iter::repeat_n(b'a', 150));
                let mut tar = RawTar::default();
                tar.header(b"././@LongLink", b'L', name.len() as u64, b"")
                    .data(&name);
                one(tar.file(b"short", b"pwned").finish())
            }),
        ),
        (
            "huge pax header",
            Box::new(|_: &Sandbox| {
                let mut tar = RawTar::default();
                tar.header(b"PaxHeaders/x", b'x', 1 << 40, b"");
                one(tar.finish())
            }),
        ),
        (
            "huge gnu long name",
            Box::new(|_: &Sandbox| {
                let mut tar = RawTar::default();
                tar.header(b"././@LongLink", b'L', 8 << 20, b"")
                    .data(&vec![b'a'; 8 << 20]);
                one(tar.finish())
            }),
        ),
        (
            "endless extension headers",
            Box::new(|_: &Sandbox| {
                let mut tar = RawTar::default();
                for _ in 0..40 {
                    tar.pax(&[("comment", b"x")]);
                }
                one(tar.file(b"f", b"x").finish())
            }),
        ),
        (
            "bad checksum",
            Box::new(|_: &Sandbox| {
                let mut tar = RawTar::default();
                tar.file(b"f", b"x");
                let mut bytes = tar.finish();
                bytes[0] ^= 1;
                one(bytes)
            }),
        ),
        (
            "bad pax record",
            Box::new(|_: &Sandbox| {
                let mut tar = RawTar::default();
                tar.header(b"PaxHeaders/x", b'x', 12, b"")
                    .data(b"99 path=abc\n");
                one(tar.file(b"f", b"x").finish())
            }),
        ),
        (
            "unsupported entry type",
            Box::new(|_: &Sandbox| one(RawTar::default().header(b"sparse", b'S', 0, b"").finish())),
        ),
        (
            "whiteout through symlink",
            Box::new(|s: &Sandbox| {
                one(RawTar::default()
                    .symlink(b"l", &s.surrounding_abs())
                    .file(b"l/.wh.outside", b"")
                    .finish())
            }),
        ),
        (
            "opaque through symlink",
            Box::new(|s: &Sandbox| {
                one(RawTar::default()
                    .symlink(b"l", &s.surrounding_abs())
                    .file(b"l/.wh..wh..opq", b"")
                    .finish())
            }),
        ),
        (
            "whiteout of dot-dot",
            Box::new(|_: &Sandbox| {
                one(RawTar::default().dir(b"d/").file(b"d/.wh...", b"").finish())
            }),
        ),
        (
            "whiteout with dot-dot path",
            Box::new(|_: &Sandbox| one(RawTar::default().file(b"../.wh.outside", b"").finish())),
        ),
        (
            "symlink from an earlier layer",
            Box::new(|s: &Sandbox| {
                vec![
                    RawTar::default()
                        .symlink(b"etc", &s.surrounding_abs())
                        .finish(),
                    RawTar::default().file(b"etc/outside", b"pwned").finish(),
                ]
            }),
        ),
        (
            "relative symlink from an earlier layer, then whiteout",
            Box::new(|_: &Sandbox| {
                vec![
                    RawTar::default().symlink(b"l", b"..").finish(),
                    RawTar::default().file(b"l/.wh.outside", b"").finish(),
                ]
            }),
        ),
        (
            "symlink from an earlier layer, then hardlink through it",
            Box::new(|s: &Sandbox| {
                vec![
                    RawTar::default()
                        .symlink(b"l", &s.surrounding_abs())
                        .finish(),
                    RawTar::default().hardlink(b"h", b"l/outside").finish(),
                ]
            }),
        ),
        (
            "truncated content",
            Box::new(|_: &Sandbox| {
                let mut tar = RawTar::default();
                tar.header(b"f", b'0', 4096, b"").data(b"short");
                one(tar.bytes.clone())
            }),
        ),
    ]
}

#[test]
fn hostile_tars_are_refused_without_touching_anything_outside() {
    let cases = corpus();
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    let escape_dir = Path::new("/xbuild-escape-dir");
    for (name, make) in cases {
        let sandbox = Sandbox::new();
        let before = survey(&sandbox.surrounding, &sandbox.target);
        let layers = make(&sandbox);
        let mut result = Ok(Default::default());
        for layer in &layers {
            result = apply_layer(&layer[..], &sandbox.target, &options());
            if result.is_err() {
                break;
            }
        }
        let error = match result {
            Ok(_) => panic!("case {name:?}: the tar was accepted"),
            Err(error) => error,
        };
        eprintln!("{name}: {error}");
        if let ApplyError::Refused { entry, .. } = &error {
            assert!(
                error.to_string().contains(entry.as_str()) && !entry.is_empty(),
                "case {name:?}: the error names no entry: {error}"
            );
        }
        let after = survey(&sandbox.surrounding, &sandbox.target);
        assert_eq!(
            before, after,
            "case {name:?}: something outside changed ({error})"
        );
        assert!(
            !escape_dir.exists(),
            "case {name:?}: created {escape_dir:?}"
        );
    }
}

#[test]
fn a_file_over_a_planted_symlink_replaces_the_symlink() {
    let sandbox = Sandbox::new();
    let before = survey(&sandbox.surrounding, &sandbox.target);
    let first = RawTar::default().symlink(b"x", b"../outside").finish();
    let second = RawTar::default().file(b"x", b"new content").finish();
    apply_layer(&first[..], &sandbox.target, &options()).unwrap();
    apply_layer(&second[..], &sandbox.target, &options()).unwrap();
    assert_eq!(fs::read(sandbox.target.join("x")).unwrap(), b"new content");
    assert!(
        !fs::symlink_metadata(sandbox.target.join("x"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(before, survey(&sandbox.surrounding, &sandbox.target));
}

#[test]
fn whiteouts_and_opaque_directories_apply_in_merge_mode() {
    let sandbox = Sandbox::new();
    let lower = RawTar::default()
        .dir(b"etc/")
        .file(b"etc/a", b"a")
        .file(b"etc/b", b"b")
        .dir(b"var/")
        .dir(b"var/cache/")
        .file(b"var/cache/x", b"x")
        .dir(b"opt/")
        .file(b"opt/y", b"y")
        .finish();
    let upper = RawTar::default()
        .dir(b"etc/")
        .file(b"etc/.wh.a", b"")
        // A directory replaced by a file.
        .file(b"var", b"now a file")
        .dir(b"opt/")
        .file(b"opt/.wh..wh..opq", b"")
        .file(b"opt/z", b"z")
        .finish();
    apply_layer(&lower[..], &sandbox.target, &options()).unwrap();
    apply_layer(&upper[..], &sandbox.target, &options()).unwrap();
    let t = &sandbox.target;
    assert!(!t.join("etc/a").exists());
    assert!(t.join("etc/b").exists());
    assert_eq!(fs::read(t.join("var")).unwrap(), b"now a file");
    assert!(!t.join("opt/y").exists());
    assert_eq!(fs::read(t.join("opt/z")).unwrap(), b"z");
}

#[test]
fn whiteouts_become_overlay_whiteouts_in_snapshots() {
    if !crate::util::require(&[crate::util::Need::Root]) {
        return;
    }
    let sandbox = Sandbox::new();
    let layer = RawTar::default()
        .dir(b"etc/")
        .file(b"etc/.wh.gone", b"")
        .dir(b"opt/")
        .file(b"opt/.wh..wh..opq", b"")
        .file(b"opt/z", b"z")
        .finish();
    let options = ApplyOptions::for_current_user(WhiteoutMode::Overlay);
    apply_layer(&layer[..], &sandbox.target, &options).unwrap();
    let whiteout = fs::symlink_metadata(sandbox.target.join("etc/gone")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &whiteout.file_type()
    ));
    assert_eq!(whiteout.rdev(), 0);
    assert_eq!(
        xattr::get(sandbox.target.join("opt"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    assert!(sandbox.target.join("opt/z").exists());
}
