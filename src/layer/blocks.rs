//! The gzip block cache of a store: where the compressed bytes of every block of the gzip
//! layer blobs written before are, so that a layer that differs little from one of them
//! copies those blocks instead of deflating them again ([`compress`](super::compress):
//! a block's bytes depend only on its key).
//!
//! ```text
//! <root>/blocks/<blob hex>     one block map per gzip blob written with the cache
//! ```
//!
//! A layout has a block cache when it has a `blocks/` directory (the store makes one;
//! layouts written as build outputs have none, and get no maps). A block map is a small
//! binary file named by its blob's digest: a header (magic, version, block count), one
//! fixed-size entry per block (key, offset and length of the compressed bytes in the blob,
//! input length, CRC-32, sha256 of the compressed bytes) and a sha256 of all of it. It is
//! written after its blob is in place (temporary file, fsync, rename), so a map never
//! names a blob that was not complete; a map whose length or checksum is wrong is ignored.
//!
//! A process loads the maps once into an index of key prefixes (8 bytes → map and entry),
//! newest maps first and at most [`MAX_INDEXED_BLOCKS`] blocks (about 32 GiB of layers,
//! a few MiB of memory); each new layer only reads the maps written since. A block found
//! in the index is used only when its map entry (read again with one `pread`) has the same
//! whole key, input length and CRC-32, its blob is in the store, and the bytes read from
//! the blob (one `pread` of the block's range, never the whole blob) hash to the entry's
//! sha256; anything else is a miss, and the block is deflated. So a stale, damaged or
//! foreign map can cost time, never a wrong blob.
//!
//! Several processes share the cache as they share blobs: maps are only created (by
//! rename, the same bytes for the same blob) and removed by garbage collection, which
//! holds the store exclusively (removing a blob's map before the blob).
//!
//! Must not: decide which layers are written, nor remove maps (the store's garbage
//! collection and check do).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

use super::compress::{BlockKey, BlockRecord, BlockSource, GzipBlocks};
use crate::oci::ImageLayout;

/// The directory of block maps under a store's root.
pub const BLOCKS_DIR: &str = "blocks";
/// The most blocks a process indexes (128 KiB of input each: 32 GiB of layers); maps
/// beyond that (the oldest) are not used.
pub const MAX_INDEXED_BLOCKS: usize = 1 << 18;
/// Open map and blob files kept per cache (closed all at once past this).
const MAX_OPEN_FILES: usize = 64;
const MAGIC: &[u8; 8] = b"XBGZMAP1";
/// Magic, then the block count (u32 LE) and four reserved zero bytes.
const HEADER: usize = 16;
/// key, digest, offset (u64), length, input length, CRC-32 (u32 each), little-endian.
const ENTRY: usize = 32 + 32 + 8 + 4 + 4 + 4;
/// sha256 of the header and entries.
const CHECKSUM: usize = 32;

/// Why a block map is not used.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// It cannot be read.
    #[error("reading {path}")]
    Read {
        /// The map.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Its bytes are not a whole map (torn, damaged or not one).
    #[error("{path} is not a valid block map: {reason}")]
    Invalid {
        /// The map.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The block map file of `blob` in the layout at `root`.
pub fn map_path(root: &Path, blob: &Digest) -> PathBuf {
    root.join(BLOCKS_DIR).join(blob.digest())
}

/// The block map of `blob` in bytes.
fn encode(records: &[BlockRecord]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + records.len() * ENTRY + CHECKSUM);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(
        &u32::try_from(records.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    bytes.extend_from_slice(&[0; 4]);
    for record in records {
        bytes.extend_from_slice(&record.key);
        bytes.extend_from_slice(&record.digest);
        bytes.extend_from_slice(&record.offset.to_le_bytes());
        bytes.extend_from_slice(&record.length.to_le_bytes());
        bytes.extend_from_slice(&record.input_length.to_le_bytes());
        bytes.extend_from_slice(&record.crc.to_le_bytes());
    }
    let checksum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&checksum);
    bytes
}

fn decode_entry(entry: &[u8; ENTRY]) -> BlockRecord {
    let array = |range: std::ops::Range<usize>| -> [u8; 32] {
        let mut out = [0; 32];
        out.copy_from_slice(&entry[range]);
        out
    };
    let u32_at =
        |at: usize| u32::from_le_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]]);
    let mut offset = [0; 8];
    offset.copy_from_slice(&entry[64..72]);
    BlockRecord {
        key: array(0..32),
        digest: array(32..64),
        offset: u64::from_le_bytes(offset),
        length: u32_at(72),
        input_length: u32_at(76),
        crc: u32_at(80),
    }
}

/// Reads and checks a whole block map (length, magic, checksum).
///
/// # Errors
/// It cannot be read or is not a whole map.
pub fn read_map(path: &Path) -> Result<Vec<BlockRecord>, MapError> {
    let invalid = |reason| MapError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = fs::read(path).map_err(|source| MapError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.len() < HEADER + CHECKSUM || &bytes[..8] != MAGIC {
        return Err(invalid("no block map header"));
    }
    let count = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    if bytes.len() != HEADER + count * ENTRY + CHECKSUM {
        return Err(invalid("its length does not match its block count (torn)"));
    }
    let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM);
    if Sha256::digest(body).as_slice() != checksum {
        return Err(invalid("its checksum does not match"));
    }
    Ok(body[HEADER..]
        .chunks_exact(ENTRY)
        .map(|entry| {
            let mut fixed = [0; ENTRY];
            fixed.copy_from_slice(entry);
            decode_entry(&fixed)
        })
        .collect())
}

/// Checks a block map against its blob at `blob_path` (whose size is `blob_size`): a whole
/// map whose blocks lie inside the blob.
///
/// # Errors
/// As [`read_map`], and blocks outside the blob.
pub fn check_map(path: &Path, blob_size: u64) -> Result<usize, MapError> {
    let records = read_map(path)?;
    let inside = records.iter().all(|record| {
        record
            .offset
            .checked_add(u64::from(record.length))
            .is_some_and(|end| end <= blob_size)
    });
    if !inside {
        return Err(MapError::Invalid {
            path: path.to_path_buf(),
            reason: "a block lies outside its blob",
        });
    }
    Ok(records.len())
}

/// The first 8 bytes of a key: what the in-memory index holds.
fn prefix(key: &BlockKey) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&key[..8]);
    u64::from_le_bytes(bytes)
}

/// The maps a process has indexed.
#[derive(Default)]
struct Index {
    /// Blob hex digests, by map number.
    maps: Vec<String>,
    /// Map names looked at already (indexed, or found invalid).
    seen: HashSet<String>,
    /// Key prefix → (map number, entry number).
    blocks: HashMap<u64, (u32, u32)>,
}

/// The block cache of one layout (see the module documentation).
pub struct BlockCache {
    root: PathBuf,
    index: Mutex<Index>,
    /// Open map and blob files, by path.
    files: Mutex<HashMap<PathBuf, Arc<File>>>,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BlockCache")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn is_hex_digest(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

impl BlockCache {
    /// The block cache of `layout`, with the maps written since the last call indexed;
    /// `None` when the layout keeps none (no `blocks/` directory). One per layout root
    /// and process.
    pub fn of_layout(layout: &ImageLayout) -> Option<Arc<Self>> {
        static CACHES: OnceLock<Mutex<HashMap<PathBuf, Arc<BlockCache>>>> = OnceLock::new();
        let root = layout.root();
        if !root.join(BLOCKS_DIR).is_dir() {
            return None;
        }
        let cache = Arc::clone(
            lock(CACHES.get_or_init(Mutex::default))
                .entry(root.to_path_buf())
                .or_insert_with(|| {
                    Arc::new(Self {
                        root: root.to_path_buf(),
                        index: Mutex::default(),
                        files: Mutex::default(),
                    })
                }),
        );
        cache.refresh();
        Some(cache)
    }

    /// Indexes the maps not looked at yet, newest first, while there is room.
    fn refresh(&self) {
        let Ok(listing) = fs::read_dir(self.root.join(BLOCKS_DIR)) else {
            return;
        };
        let mut new: Vec<(SystemTime, String)> = {
            let index = lock(&self.index);
            if index.blocks.len() >= MAX_INDEXED_BLOCKS {
                return;
            }
            listing
                .flatten()
                .filter_map(|entry| {
                    let name = entry.file_name().into_string().ok()?;
                    if !is_hex_digest(&name) || index.seen.contains(&name) {
                        return None;
                    }
                    let modified = entry.metadata().ok()?.modified().ok()?;
                    Some((modified, name))
                })
                .collect()
        };
        // Newest first.
        new.sort();
        new.reverse();
        for (_, name) in new {
            // Read without the lock: other layers' blocks may be looked up meanwhile.
            let records = read_map(&self.root.join(BLOCKS_DIR).join(&name));
            let mut index = lock(&self.index);
            if index.blocks.len() >= MAX_INDEXED_BLOCKS {
                return;
            }
            if !index.seen.insert(name.clone()) {
                continue;
            }
            let Ok(records) = records else {
                continue;
            };
            let Ok(map) = u32::try_from(index.maps.len()) else {
                return;
            };
            index.maps.push(name);
            for (entry, record) in records.iter().enumerate() {
                let Ok(entry) = u32::try_from(entry) else {
                    break;
                };
                index
                    .blocks
                    .entry(prefix(&record.key))
                    .or_insert((map, entry));
            }
        }
    }

    /// How many blocks are indexed.
    pub fn indexed_blocks(&self) -> usize {
        lock(&self.index).blocks.len()
    }

    fn open(&self, path: PathBuf) -> Option<Arc<File>> {
        let mut files = lock(&self.files);
        if let Some(file) = files.get(&path) {
            return Some(Arc::clone(file));
        }
        let file = Arc::new(File::open(&path).ok()?);
        if files.len() >= MAX_OPEN_FILES {
            files.clear();
        }
        files.insert(path, Arc::clone(&file));
        Some(file)
    }

    /// Writes the map of `blob` (in place already) from the blocks its writer reported,
    /// unless it has a valid one. Nothing when no block was reported.
    ///
    /// # Errors
    /// The map cannot be written.
    pub fn record(
        &self,
        layout: &ImageLayout,
        blob: &Digest,
        blocks: &GzipBlocks,
    ) -> io::Result<()> {
        let path = map_path(&self.root, blob);
        if blocks.records.is_empty() || read_map(&path).is_ok() {
            return Ok(());
        }
        let tmp = layout.tmp_dir();
        fs::create_dir_all(&tmp)?;
        let mut file = tempfile::Builder::new()
            .prefix("blocks-")
            .tempfile_in(&tmp)?;
        file.write_all(&encode(&blocks.records))?;
        file.as_file().sync_all()?;
        file.persist(&path).map_err(|error| error.error)?;
        if let Some(parent) = path.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(())
    }
}

impl BlockSource for BlockCache {
    fn fetch(
        &self,
        key: &BlockKey,
        input_length: usize,
        crc: u32,
        output: &mut Vec<u8>,
    ) -> Option<[u8; 32]> {
        let (map, entry) = {
            let index = lock(&self.index);
            let &(map, entry) = index.blocks.get(&prefix(key))?;
            (index.maps.get(map as usize)?.clone(), entry)
        };
        let map_file = self.open(self.root.join(BLOCKS_DIR).join(&map))?;
        let mut bytes = [0; ENTRY];
        let at = HEADER as u64 + u64::from(entry) * ENTRY as u64;
        map_file.read_exact_at(&mut bytes, at).ok()?;
        let record = decode_entry(&bytes);
        if record.key != *key
            || usize::try_from(record.input_length).ok()? != input_length
            || record.crc != crc
        {
            return None;
        }
        // A compressed block is at most a little bigger than its input (stored blocks).
        if record.length as usize > 2 * super::compress::GZIP_BLOCK {
            return None;
        }
        let blob = self.open(self.root.join("blobs").join("sha256").join(&map))?;
        output.clear();
        output.resize(usize::try_from(record.length).ok()?, 0);
        blob.read_exact_at(output, record.offset).ok()?;
        (Sha256::digest(output.as_slice()).as_slice() == record.digest).then_some(record.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::compress::{CompressPool, GZIP_BLOCK};
    use crate::layer::{Algorithm, Compression, LayerBlob};

    /// A layout with a block cache, as the store makes it.
    fn cached_layout() -> (tempfile::TempDir, ImageLayout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::open_or_create(dir.path().join("store")).unwrap();
        fs::create_dir_all(layout.root().join(BLOCKS_DIR)).unwrap();
        (dir, layout)
    }

    fn write(pool: &CompressPool, layout: &ImageLayout, level: i64, bytes: &[u8]) -> LayerBlob {
        let compression = Compression::with_level(Algorithm::Gzip, level).unwrap();
        super::super::write_raw_layer_on(pool, layout, compression, |out| {
            for piece in bytes.chunks(100_000) {
                out.write_all(piece)
                    .map_err(super::super::LayerError::Write)?;
            }
            Ok(())
        })
        .unwrap()
    }

    /// The bytes compressed with no cache at all.
    fn fresh(pool: &CompressPool, level: i64, bytes: &[u8]) -> Vec<u8> {
        let compression = Compression::with_level(Algorithm::Gzip, level).unwrap();
        let mut writer = pool.writer(compression, Vec::new()).unwrap();
        writer.write_all(bytes).unwrap();
        writer.finish().unwrap()
    }

    /// Random-looking and text-like bytes, and a real binary (this test's own executable).
    fn inputs() -> Vec<(&'static str, Vec<u8>)> {
        let mut state = 0x1234_5678_9abc_def1_u64;
        let random: Vec<u8> = (0..3 * GZIP_BLOCK + 999)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut real = fs::read(std::env::current_exe().unwrap()).unwrap();
        real.truncate(40 * GZIP_BLOCK + 12345);
        vec![
            ("random", random),
            (
                "text",
                super::super::compress::tests::sample(20 * GZIP_BLOCK + 4321),
            ),
            ("real", real),
        ]
    }

    /// Edits in the middle: the same size, grown, shrunk.
    fn edits(input: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
        let middle = input.len() / 2;
        let mut same = input.to_vec();
        for byte in &mut same[middle..middle + 300] {
            *byte = byte.wrapping_add(1);
        }
        let mut grown = input.to_vec();
        grown.splice(middle..middle, std::iter::repeat_n(b'x', 1536));
        let mut shrunk = input.to_vec();
        shrunk.drain(middle..middle + 4096);
        // The end of a block: the next block's input is the same, its dictionary is not.
        let mut dictionary = input.to_vec();
        let end = (input.len() / 2 / GZIP_BLOCK + 1) * GZIP_BLOCK;
        for byte in &mut dictionary[end - 4096..end] {
            *byte = byte.wrapping_add(1);
        }
        vec![
            ("same size", same),
            ("grown", grown),
            ("shrunk", shrunk),
            ("same size", dictionary),
        ]
    }

    #[test]
    fn reused_blocks_make_the_bytes_a_fresh_compression_makes() {
        let pools = [CompressPool::new(1), CompressPool::new(3)];
        for (name, input) in inputs() {
            for level in [1, 6, 9] {
                for pool in &pools {
                    let (_dir, layout) = cached_layout();
                    let first = write(pool, &layout, level, &input);
                    let (reused, total) = first.reused_blocks.unwrap();
                    assert_eq!(reused, 0, "{name}: nothing to reuse in an empty store");
                    assert_eq!(total, input.len().div_ceil(GZIP_BLOCK).max(1) as u64);
                    assert!(
                        layout.read_blob(first.descriptor.digest()).unwrap()
                            == fresh(pool, level, &input)
                    );
                    for (edit, edited) in edits(&input) {
                        let blob = write(pool, &layout, level, &edited);
                        let bytes = layout.read_blob(blob.descriptor.digest()).unwrap();
                        let context =
                            format!("{name}, {edit}, level {level}, {} threads", pool.threads());
                        assert!(bytes == fresh(pool, level, &edited), "{context}");
                        let (reused, total) = blob.reused_blocks.unwrap();
                        // Blocks before the edit are the same; after it only when the edit
                        // kept the block boundaries (same size); the last block always differs
                        // for a grown or shrunk input.
                        let before = (input.len() / 2 / GZIP_BLOCK).saturating_sub(1) as u64;
                        assert!(reused >= before, "{context}: {reused} of {total} reused");
                        if edit == "same size" {
                            assert!(reused + 3 >= total, "{context}: {reused} of {total}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_same_layer_again_reuses_every_block() {
        let pool = CompressPool::new(2);
        let (_dir, layout) = cached_layout();
        let input = super::super::compress::tests::sample(10 * GZIP_BLOCK + 7);
        let first = write(&pool, &layout, 6, &input);
        let other = ImageLayout::open_or_create(layout.root().join("..").join("other")).unwrap();
        fs::create_dir_all(other.root().join(BLOCKS_DIR)).unwrap();
        let again = write(&pool, &layout, 6, &input);
        assert_eq!(again.descriptor.digest(), first.descriptor.digest());
        assert_eq!(again.reused_blocks, Some((11, 11)));
        // Another layout has its own cache: nothing to reuse there.
        assert_eq!(write(&pool, &other, 6, &input).reused_blocks, Some((0, 11)));
        // A layout without blocks/ (an output) gets no map.
        let output = ImageLayout::open_or_create(layout.root().join("..").join("out")).unwrap();
        let plain = write(&pool, &output, 6, &input);
        assert_eq!(plain.reused_blocks, None);
        assert!(!output.root().join(BLOCKS_DIR).exists());
        // Another level is another key.
        assert_eq!(
            write(&pool, &layout, 9, &input).reused_blocks,
            Some((0, 11))
        );
    }

    #[test]
    fn damaged_maps_and_blobs_cost_time_never_bytes() {
        let pool = CompressPool::new(2);
        let (_dir, layout) = cached_layout();
        let input = super::super::compress::tests::sample(8 * GZIP_BLOCK + 100);
        let first = write(&pool, &layout, 6, &input);
        let blob_path = layout.blob_path(first.descriptor.digest()).unwrap();
        let map = map_path(layout.root(), first.descriptor.digest());
        let records = read_map(&map).unwrap();
        assert_eq!(records.len(), 9);
        assert!(check_map(&map, first.descriptor.size()).is_ok());
        // A byte of the third block's compressed bytes flipped in the blob (as a disk
        // might): that block is deflated again, the others reused.
        let mut blob = fs::read(&blob_path).unwrap();
        blob[records[2].offset as usize + 10] ^= 0x55;
        fs::write(&blob_path, &blob).unwrap();
        let mut edited = input.clone();
        edited[input.len() - 10] ^= 1;
        let again = write(&pool, &layout, 6, &edited);
        assert!(layout.read_blob(again.descriptor.digest()).unwrap() == fresh(&pool, 6, &edited));
        assert_eq!(
            again.reused_blocks,
            Some((7, 9)),
            "block 2 damaged, block 8 edited"
        );

        // A torn map is not indexed (a new process: a new cache for this root).
        let (_dir2, layout2) = cached_layout();
        let first2 = write(&pool, &layout2, 6, &input);
        let map2 = map_path(layout2.root(), first2.descriptor.digest());
        let bytes = fs::read(&map2).unwrap();
        fs::write(&map2, &bytes[..bytes.len() - 40]).unwrap();
        assert!(matches!(read_map(&map2), Err(MapError::Invalid { .. })));
        let fresh_cache = BlockCache {
            root: layout2.root().to_path_buf(),
            index: Mutex::default(),
            files: Mutex::default(),
        };
        fresh_cache.refresh();
        assert_eq!(fresh_cache.indexed_blocks(), 0);
        // A map whose blob is gone finds nothing.
        let (_dir3, layout3) = cached_layout();
        let first3 = write(&pool, &layout3, 6, &input);
        fs::remove_file(layout3.blob_path(first3.descriptor.digest()).unwrap()).unwrap();
        let again3 = write(&pool, &layout3, 6, &input);
        assert_eq!(again3.reused_blocks, Some((0, 9)));
        assert!(layout3.read_blob(again3.descriptor.digest()).unwrap() == fresh(&pool, 6, &input));
    }
}
