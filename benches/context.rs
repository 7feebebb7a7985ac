//! Build-context benchmark: walk + digest of a generated context (20,000 files by default),
//! without a stat cache (every file read), then warm (stat cache loaded from its file, as a
//! no-change rebuild does). Prints milliseconds.
//!
//! Run: `cargo bench --bench context [-- FILES]`. Under `cargo test` it runs on 300 files
//! as a smoke test.
#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use xbuild::context::{self, Dockerignore, StatCache};

const FILES_PER_DIR: usize = 100;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
    // it, and then a small context is enough to check that it works.
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    // A first argument that is not a number is a test name filter (`cargo test NAME`
    // passes it to every target): it is not FILES.
    let files: usize = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(if benchmarking { 20_000 } else { 300 });
    let root = tempfile::Builder::new()
        .prefix("xbuild-bench-context-")
        .tempdir()
        .expect("temp dir");
    let context_dir = root.path().join("ctx");
    let cache_file = root.path().join("stat-cache");
    let bytes = generate(&context_dir, files);
    println!(
        "context: {files} files in {} directories, {} KiB, in {}",
        files.div_ceil(FILES_PER_DIR),
        bytes / 1024,
        context_dir.display()
    );
    // Files changed in the last two seconds are never remembered by the stat cache.
    if benchmarking {
        std::thread::sleep(Duration::from_millis(3500));
    }

    let dockerfile = context_dir.join("Dockerfile");
    let ignore = Dockerignore::load(&context_dir, &dockerfile).expect("dockerignore");

    // Cold: no stat cache, every file is read.
    let start = Instant::now();
    let entries = std::sync::Arc::new(context::walk(&context_dir, &ignore).expect("walk"));
    let walk_time = start.elapsed();
    let mut cache = StatCache::load(&cache_file, &context_dir, entries.clone());
    let start = Instant::now();
    let cold =
        context::digest_entries_cached(&context_dir, entries.iter(), &mut cache).expect("digest");
    let digest_time = start.elapsed();
    let start = Instant::now();
    cache.save(&cache_file).expect("save");
    let save_time = start.elapsed();
    println!(
        "cold:  walk {:7.1} ms ({} entries)  digest {:7.1} ms  save cache {:5.1} ms ({} files)  total {:7.1} ms",
        ms(walk_time),
        entries.len(),
        ms(digest_time),
        ms(save_time),
        cache.len(),
        ms(walk_time + digest_time + save_time)
    );

    // Warm, as a no-change rebuild: walk, load the cache (for that walk), digest.
    let mut totals = Vec::new();
    for round in 1..=3 {
        let start = Instant::now();
        let entries = std::sync::Arc::new(context::walk(&context_dir, &ignore).expect("walk"));
        let walk_time = start.elapsed();
        let start = Instant::now();
        let mut cache = StatCache::load(&cache_file, &context_dir, entries.clone());
        let load_time = start.elapsed();
        let start = Instant::now();
        let warm = context::digest_entries_cached(&context_dir, entries.iter(), &mut cache)
            .expect("digest");
        let digest_time = start.elapsed();
        assert_eq!(warm, cold, "same context, same digest");
        let total = load_time + walk_time + digest_time;
        totals.push(total);
        println!(
            "warm {round}: load cache {:5.1} ms  walk {:7.1} ms  digest {:7.1} ms  total {:7.1} ms",
            ms(load_time),
            ms(walk_time),
            ms(digest_time),
            ms(total)
        );
    }

    // For comparison: the walk without patterns (file system cost alone).
    let start = Instant::now();
    let all = context::walk(&context_dir, &Dockerignore::empty()).expect("walk");
    println!(
        "walk without patterns: {:7.1} ms ({} entries)",
        ms(start.elapsed()),
        all.len()
    );

    // For comparison: warm page cache but no stat cache (every file read again).
    let start = Instant::now();
    let entries = context::walk(&context_dir, &ignore).expect("walk");
    let again = context::digest_entries(&context_dir, &entries).expect("digest");
    assert_eq!(again, cold);
    println!(
        "no stat cache, page cache warm: walk + digest {:7.1} ms",
        ms(start.elapsed())
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Writes `files` files (100 per directory, 256 B to 8 KiB of varied bytes each), a
/// Dockerfile, and a `.dockerignore` with a few typical patterns. Returns the bytes written.
fn generate(context_dir: &Path, files: usize) -> usize {
    fs::create_dir_all(context_dir).expect("mkdir");
    fs::write(
        context_dir.join("Dockerfile"),
        "FROM scratch\nCOPY . /app\n",
    )
    .expect("write");
    fs::write(
        context_dir.join(".dockerignore"),
        "# typical\n**/*.log\nbuild\n!build/keep\n.git\nnode_modules\n*.tmp\n",
    )
    .expect("write");
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut written = 0;
    let mut buffer = Vec::new();
    for index in 0..files {
        let dir = context_dir
            .join(format!("pkg{:03}", index / FILES_PER_DIR / 20))
            .join(format!("mod{:03}", index / FILES_PER_DIR));
        if index % FILES_PER_DIR == 0 {
            fs::create_dir_all(&dir).expect("mkdir");
        }
        let extension = if index % 50 == 0 { "log" } else { "rs" };
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let size = 256 + (state % (8 * 1024 - 256)) as usize;
        buffer.clear();
        buffer.extend((0..size).map(|i| (state.rotate_left(i as u32 % 64) as u8) ^ (i as u8)));
        fs::write(dir.join(format!("file{index}.{extension}")), &buffer).expect("write");
        written += size;
    }
    written
}
