//! Layer commit throughput: a generated ~500 MB tree written as a layer (deterministic tar,
//! diff_id and blob digests, compression, blob file) at gzip and at zstd, one layer at a
//! time and two layers at once; prints MB/s of tar input and the peak RSS (VmHWM).
//!
//! Run: `cargo bench --bench layer` (set `XBUILD_BENCH_MB` to change the size,
//! `XBUILD_BENCH_DIR` for where the tree and store go, default a temp dir;
//! `XBUILD_BENCH_SOURCE=DIR` to measure a real tree instead, e.g. a Debian rootfs).
//!
//! For reference it also measures bare single-threaded compression of 64 MB of the same
//! kind of bytes in memory (no tar, no hashing, no files): the ceiling the pipeline chases.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    missing_docs,
    reason = "a benchmark prints its figures"
)]

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use xbuild::layer::{self, Compression, LayerBlob, TreeKind};
use xbuild::oci::ImageLayout;

const WORDS: &[&str] = &[
    "the",
    "layer",
    "image",
    "build",
    "platform",
    "snapshot",
    "overlay",
    "digest",
    "config",
    "manifest",
    "index",
    "stage",
    "step",
    "target",
    "linux",
    "arm64",
    "amd64",
    "return",
    "function",
    "struct",
    "impl",
    "let",
    "mut",
    "if",
    "else",
    "for",
    "while",
    "0x7f",
    "ELF",
    "/usr/lib",
    "#include",
    "<stdio.h>",
    "printf",
    "malloc",
    "free",
    "int",
    "char",
    "void",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A tree like a root filesystem: many files from 1 kB to 4 MB, about 2/3 text-like
/// (compressible) and 1/3 random (incompressible) 64 kB blocks.
fn make_tree(root: &Path, megabytes: u64) -> u64 {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut total = 0u64;
    let mut index = 0;
    let budget = megabytes * 1_000_000;
    while total < budget {
        let directory = root.join(format!("d{:03}/sub{}", index % 97, index % 7));
        fs::create_dir_all(&directory).unwrap();
        let size = match rng.next() % 10 {
            0..=5 => 1_000 + rng.next() % 32_000,
            6..=8 => 32_000 + rng.next() % 500_000,
            _ => 500_000 + rng.next() % 3_500_000,
        }
        .min(budget - total + 1);
        let mut file =
            std::io::BufWriter::new(fs::File::create(directory.join(format!("f{index}"))).unwrap());
        let mut written = 0u64;
        while written < size {
            let block = (size - written).min(65_536) as usize;
            let mut bytes = Vec::with_capacity(block);
            if rng.next() % 3 == 0 {
                while bytes.len() < block {
                    bytes.extend_from_slice(&rng.next().to_le_bytes());
                }
            } else {
                while bytes.len() < block {
                    let word = WORDS[(rng.next() % WORDS.len() as u64) as usize];
                    bytes.extend_from_slice(word.as_bytes());
                    bytes.push(if rng.next() % 9 == 0 { b'\n' } else { b' ' });
                }
            }
            bytes.truncate(block);
            file.write_all(&bytes).unwrap();
            written += block as u64;
        }
        total += size;
        index += 1;
    }
    total
}

fn peak_rss_kb() -> u64 {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn report(label: &str, blobs: &[LayerBlob], seconds: f64) {
    let tar: u64 = blobs.iter().map(|blob| blob.tar_size).sum();
    let compressed: u64 = blobs.iter().map(|blob| blob.descriptor.size()).sum();
    println!(
        "{label:<28} {:>8.1} MB tar -> {:>8.1} MB blob in {seconds:>6.2} s: {:>6.1} MB/s   peak RSS so far {} MB",
        tar as f64 / 1e6,
        compressed as f64 / 1e6,
        tar as f64 / 1e6 / seconds,
        peak_rss_kb() / 1024
    );
}

/// Bare compression speed of `bytes` on this thread, MB/s.
fn bare_compression(bytes: &[u8], compression: Compression) -> f64 {
    let started = Instant::now();
    let compressed = match compression {
        Compression::Gzip => {
            let mut encoder = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::new(layer::GZIP_LEVEL));
            encoder.write_all(bytes).unwrap();
            encoder.finish().unwrap().len()
        }
        Compression::Zstd => zstd::encode_all(bytes, layer::ZSTD_LEVEL).unwrap().len(),
        Compression::None => bytes.len(),
    };
    assert!(compressed > 0);
    bytes.len() as f64 / 1e6 / started.elapsed().as_secs_f64()
}

fn read_sample(root: &Path, limit: usize) -> Vec<u8> {
    let mut sample = Vec::with_capacity(limit);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<_> = entries.flatten().map(|entry| entry.path()).collect();
        paths.sort();
        for path in paths {
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() && sample.len() < limit {
                if let Ok(bytes) = fs::read(&path) {
                    let take = bytes.len().min(limit - sample.len());
                    sample.extend_from_slice(&bytes[..take]);
                }
            }
        }
    }
    sample
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`: do nothing then.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("benches/layer.rs: run with `cargo bench --bench layer`");
        return;
    }
    let megabytes: u64 = std::env::var("XBUILD_BENCH_MB")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(500);
    let base = std::env::var_os("XBUILD_BENCH_DIR").map(std::path::PathBuf::from);
    let temp = match &base {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let (tree, halves) = match std::env::var_os("XBUILD_BENCH_SOURCE") {
        Some(source) => {
            let source = std::path::PathBuf::from(source);
            let mut subdirs: Vec<_> = fs::read_dir(&source)
                .unwrap()
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.is_dir() && !path.is_symlink())
                .collect();
            subdirs.sort();
            let second = subdirs.split_off(subdirs.len() / 2);
            println!(
                "measuring {} (halves: {subdirs:?} / {second:?})",
                source.display()
            );
            // Parallel run: the first half of the top directories against the second.
            (source, [subdirs, second])
        }
        None => {
            let tree = temp.path().join("tree");
            let halves = [tree.join("a"), tree.join("b")];
            let started = Instant::now();
            let total = make_tree(&halves[0], megabytes / 2) + make_tree(&halves[1], megabytes / 2);
            println!(
                "generated {:.1} MB in {:.1} s",
                total as f64 / 1e6,
                started.elapsed().as_secs_f64(),
            );
            (tree, [vec![halves[0].clone()], vec![halves[1].clone()]])
        }
    };
    println!(
        "{} CPUs; load average {}",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    for compression in [Compression::Gzip, Compression::Zstd] {
        let name = format!("{compression:?}").to_lowercase();
        let layout =
            ImageLayout::open_or_create(temp.path().join(format!("store-{name}"))).unwrap();
        let started = Instant::now();
        let blob = layer::write_tree_layer(&layout, &tree, TreeKind::RootFs, compression, Some(0))
            .unwrap();
        report(
            &format!("{name}, one layer"),
            &[blob],
            started.elapsed().as_secs_f64(),
        );

        let layout =
            ImageLayout::open_or_create(temp.path().join(format!("store-{name}-parallel")))
                .unwrap();
        let started = Instant::now();
        let jobs = halves
            .iter()
            .map(|half| {
                let layout = &layout;
                move || {
                    // One layer per half: the directories of the half, in one tar.
                    layer::write_layer(layout, compression, Some(0), |tar| {
                        for dir in half {
                            let name = Path::new(dir.file_name().unwrap());
                            let meta = fs::symlink_metadata(dir).unwrap();
                            let entry = layer::entry_from_metadata(name, dir, &meta)?;
                            tar.append(&entry, None).map_err(layer::LayerError::Write)?;
                            layer::diff::write_tree_at(tar, dir, name, TreeKind::RootFs)?;
                        }
                        Ok(())
                    })
                }
            })
            .collect();
        let blobs = layer::commit_in_parallel(jobs).unwrap();
        report(
            &format!("{name}, two layers at once"),
            &blobs,
            started.elapsed().as_secs_f64(),
        );
    }
    println!(
        "peak RSS (VmHWM) of the layer commits: {} MB",
        peak_rss_kb() / 1024
    );
    let sample = read_sample(&tree, 64 << 20);
    for compression in [Compression::Gzip, Compression::Zstd] {
        println!(
            "bare {compression:?} of {:.0} MB in memory, one thread: {:.1} MB/s",
            sample.len() as f64 / 1e6,
            bare_compression(&sample, compression)
        );
    }
    println!(
        "peak RSS including the 64 MB sample: {} MB",
        peak_rss_kb() / 1024
    );
}
