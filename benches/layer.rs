//! Layer commit throughput: a generated ~500 MB tree written as a layer (deterministic tar,
//! diff_id and blob digests, compression, blob file) at gzip and at zstd, each at its
//! default level and at a non-default one (`compression-level`: gzip 1, zstd 9), one layer
//! at a time and two layers at once; prints MB/s of tar input and the peak RSS (VmHWM).
//!
//! Run: `cargo bench --bench layer` (set `XBUILD_BENCH_MB` to change the size,
//! `XBUILD_BENCH_DIR` for where the tree and store go, default a temp dir).
//!
//! The tree is made of real files: regular files copied from the host's `/usr` (a sorted,
//! repeatable walk) until the size is reached, so that compression sees what it sees in a
//! root filesystem. Deflate's speed depends on the data by a factor of three or more (highly
//! repetitive text is the slow case at level 6), so a synthetic tree does not tell how close
//! the pipeline is to the compressor's limit. `XBUILD_BENCH_SOURCE=DIR` copies from another
//! directory (e.g. a Debian rootfs); `XBUILD_BENCH_DATA=synthetic` uses the old generated
//! word-salad tree, the worst case for gzip.
//!
//! Each row also gives CPU seconds (user + system, of all threads): on a busy machine wall
//! time varies, CPU time much less, and MB per CPU-second is the per-core figure to compare
//! with the bare compressor.
//!
//! The default gzip also gets two rows with a gzip block cache (as the store has one): the
//! same layer on an empty cache (the cost of keying every block, to compare with the row
//! without), then after a one-file edit (most blocks copied from the first blob).
//!
//! For reference it also measures bare single-threaded compression of 64 MB of the same
//! kind of bytes in memory (no tar, no hashing, no files): the ceiling the pipeline chases.
//!
//! `XBUILD_BENCH_ROWS=one-layer` measures only one layer at each algorithm's default level
//! (no block cache, no two layers at once, no other level, no bare compression): what
//! `scripts/bench.sh` runs three ways (one core, two cores with one compressing thread and
//! with two) to give one big layer's speed-up on every core (issue 19 item 3).
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

use xbuild::layer::{self, Algorithm, Compression, LayerBlob, TreeKind};
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

/// Copies regular files from `source` (sorted walk, files up to 64 MB, no symlinks) into
/// `root` until `megabytes` are copied; returns the bytes copied.
fn copy_tree(source: &Path, root: &Path, megabytes: u64) -> u64 {
    let budget = megabytes * 1_000_000;
    let mut total = 0u64;
    let mut index = 0usize;
    let mut stack = vec![source.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<_> = entries.flatten().map(|entry| entry.path()).collect();
        paths.sort();
        paths.reverse();
        for path in paths {
            if total >= budget {
                return total;
            }
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() && meta.len() <= 64 << 20 {
                let directory = root.join(format!("d{:03}", index % 97));
                fs::create_dir_all(&directory).unwrap();
                let name = path.file_name().unwrap().to_string_lossy();
                if fs::copy(&path, directory.join(format!("{index}-{name}"))).is_ok() {
                    total += meta.len();
                    index += 1;
                }
            }
        }
    }
    total
}

/// User + system CPU seconds of this process so far (all threads).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_SELF is valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn peak_rss_kb() -> u64 {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn report(label: &str, blobs: &[LayerBlob], seconds: f64, cpu: f64) {
    let tar: u64 = blobs.iter().map(|blob| blob.tar_size).sum();
    let compressed: u64 = blobs.iter().map(|blob| blob.descriptor.size()).sum();
    println!(
        "{label:<26} {:>7.1} MB tar -> {:>7.1} MB blob in {seconds:>6.2} s: {:>6.1} MB/s wall, {:>6.1} MB per CPU-s   peak RSS so far {} MB",
        tar as f64 / 1e6,
        compressed as f64 / 1e6,
        tar as f64 / 1e6 / seconds,
        tar as f64 / 1e6 / cpu,
        peak_rss_kb() / 1024
    );
}

/// The compressions measured: each algorithm at its default level, and a non-default
/// level of each (`compression-level=`: gzip's fastest, a slower zstd).
fn compressions() -> [Compression; 4] {
    [
        Compression::Gzip,
        Compression::with_level(Algorithm::Gzip, 1).unwrap(),
        Compression::Zstd,
        Compression::with_level(Algorithm::Zstd, 9).unwrap(),
    ]
}

/// Bare compression speed of `bytes` on this thread: MB/s wall and MB per CPU-second.
fn bare_compression(bytes: &[u8], compression: Compression) -> (f64, f64) {
    let started = Instant::now();
    let cpu = cpu_seconds();
    let compressed = match compression.algorithm() {
        Algorithm::Gzip => {
            let level = u32::try_from(compression.level()).unwrap();
            let mut encoder = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::new(level));
            encoder.write_all(bytes).unwrap();
            encoder.finish().unwrap().len()
        }
        Algorithm::Zstd => zstd::encode_all(bytes, compression.level()).unwrap().len(),
        Algorithm::None => bytes.len(),
    };
    assert!(compressed > 0);
    let megabytes = bytes.len() as f64 / 1e6;
    (
        megabytes / started.elapsed().as_secs_f64(),
        megabytes / (cpu_seconds() - cpu),
    )
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

/// Moves the `dNNN` directories of `all` into two halves (even and odd numbers).
fn split_in_halves(all: &Path, halves: &[std::path::PathBuf; 2]) {
    for half in halves {
        fs::create_dir_all(half).unwrap();
    }
    let mut dirs: Vec<_> = fs::read_dir(all)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for (index, dir) in dirs.into_iter().enumerate() {
        fs::rename(&dir, halves[index % 2].join(dir.file_name().unwrap())).unwrap();
    }
    fs::remove_dir(all).unwrap();
}

/// The same layer written into a layout with a gzip block cache (as the store has): on an
/// empty cache (what keying every block costs a fresh layer, against the row before),
/// then again after one file in the middle of the tree changed (the blocks reused).
fn block_cache_rows(base: &Path, tree: &Path, compression: Compression) {
    let layout = ImageLayout::open_or_create(base.join("store-blocks")).unwrap();
    fs::create_dir_all(layout.root().join(layer::blocks::BLOCKS_DIR)).unwrap();
    let started = Instant::now();
    let cpu = cpu_seconds();
    let blob =
        layer::write_tree_layer(&layout, tree, TreeKind::RootFs, compression, Some(0)).unwrap();
    report(
        &format!("{compression}, one layer, block cache on (empty: every block keyed)"),
        &[blob],
        started.elapsed().as_secs_f64(),
        cpu_seconds() - cpu,
    );
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir).unwrap().flatten().collect();
        entries.sort_by_key(fs::DirEntry::file_name);
        for entry in entries {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    if let Some(middle) = files.get(files.len() / 2) {
        let mut file = fs::OpenOptions::new().append(true).open(middle).unwrap();
        file.write_all(b"one edit\n").unwrap();
    }
    let started = Instant::now();
    let cpu = cpu_seconds();
    let blob =
        layer::write_tree_layer(&layout, tree, TreeKind::RootFs, compression, Some(0)).unwrap();
    let (reused, blocks) = blob.reused_blocks.unwrap_or_default();
    report(
        &format!(
            "{compression}, one layer after a one-file edit ({reused} of {blocks} blocks reused)"
        ),
        &[blob],
        started.elapsed().as_secs_f64(),
        cpu_seconds() - cpu,
    );
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`: do nothing then.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("benches/layer.rs: run with `cargo bench --bench layer`");
        return;
    }
    let only_one_layer = match std::env::var("XBUILD_BENCH_ROWS") {
        Ok(rows) if rows == "one-layer" => true,
        Ok(rows) => panic!("XBUILD_BENCH_ROWS={rows}: the only value is `one-layer`"),
        Err(_) => false,
    };
    let megabytes: u64 = std::env::var("XBUILD_BENCH_MB")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(500);
    let base = std::env::var_os("XBUILD_BENCH_DIR").map(std::path::PathBuf::from);
    let temp = match &base {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let tree = temp.path().join("tree");
    let halves = [tree.join("a"), tree.join("b")];
    let started = Instant::now();
    let total = if std::env::var("XBUILD_BENCH_DATA").as_deref() == Ok("synthetic") {
        make_tree(&halves[0], megabytes / 2) + make_tree(&halves[1], megabytes / 2)
    } else {
        let source = std::env::var_os("XBUILD_BENCH_SOURCE").map_or_else(
            || std::path::PathBuf::from("/usr"),
            std::path::PathBuf::from,
        );
        let copied = copy_tree(&source, &tree.join("all"), megabytes);
        split_in_halves(&tree.join("all"), &halves);
        println!("copied from {}", source.display());
        copied
    };
    println!(
        "tree of {:.1} MB made in {:.1} s",
        total as f64 / 1e6,
        started.elapsed().as_secs_f64(),
    );
    let halves = [vec![halves[0].clone()], vec![halves[1].clone()]];
    println!(
        "{} CPUs; load average {}",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    for compression in compressions() {
        if only_one_layer && compression != Compression::of(compression.algorithm()) {
            continue;
        }
        let name = compression.to_string();
        let layout =
            ImageLayout::open_or_create(temp.path().join(format!("store-{name}"))).unwrap();
        let started = Instant::now();
        let cpu = cpu_seconds();
        let blob = layer::write_tree_layer(&layout, &tree, TreeKind::RootFs, compression, Some(0))
            .unwrap();
        let digest = blob.descriptor.digest().to_string();
        report(
            &format!("{name}, one layer"),
            &[blob],
            started.elapsed().as_secs_f64(),
            cpu_seconds() - cpu,
        );

        if only_one_layer {
            // Its digest: the same bytes whatever the thread count (scripts/bench.sh checks).
            println!("blob digest {name} {digest}");
            continue;
        }
        if compression == Compression::Gzip {
            block_cache_rows(temp.path(), &tree, compression);
        }

        let layout =
            ImageLayout::open_or_create(temp.path().join(format!("store-{name}-parallel")))
                .unwrap();
        let started = Instant::now();
        let cpu = cpu_seconds();
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
            cpu_seconds() - cpu,
        );
    }
    println!(
        "peak RSS (VmHWM) of the layer commits: {} MB",
        peak_rss_kb() / 1024
    );
    if only_one_layer {
        return;
    }
    let sample = read_sample(&tree, 64 << 20);
    for compression in compressions() {
        let (wall, per_cpu) = bare_compression(&sample, compression);
        println!(
            "bare {compression} of {:.0} MB in memory, one thread: {wall:.1} MB/s wall, {per_cpu:.1} MB per CPU-s",
            sample.len() as f64 / 1e6,
        );
    }
    println!(
        "peak RSS including the 64 MB sample: {} MB",
        peak_rss_kb() / 1024
    );
}
