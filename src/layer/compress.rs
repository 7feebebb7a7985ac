//! Layer compression on every core, with bytes that depend only on the input.
//!
//! - **gzip**, as pigz does: the stream is cut into blocks of [`GZIP_BLOCK`] input bytes
//!   (at every level: where blocks end depends on the input length only);
//!   each block is deflated on its own (raw deflate at the layer's level, the 32 KiB of
//!   input before it as the dictionary, ended by a sync flush so that the raw streams
//!   concatenate; the last block ends the deflate stream); the blocks' outputs are written
//!   in order between one gzip header and one trailer, whose CRC-32 is combined from the
//!   blocks' CRCs. One valid gzip member, which `gzip`, Python's `gzip` and Go's
//!   `compress/gzip` read as any other.
//! - **zstd**: zstd's own multithreaded mode at the layer's level, always with at least one worker and a fixed
//!   job size ([`ZSTD_JOB_SIZE`]): its frame is then the same for any number of workers
//!   (and differs from single-threaded zstd's, which is never used).
//!
//! Neither output depends on the number of threads nor on how the input was split into
//! `write` calls: with `SOURCE_DATE_EPOCH` a layer has the same digest on any machine.
//!
//! Threads: a [`CompressPool`] owns the compressing threads; one is shared by the whole
//! process ([`CompressPool::shared`], one thread per CPU). Every gzip layer being written
//! queues its blocks to the same threads, so several layers at once never run more
//! compressing threads than there are CPUs. A zstd layer takes the pool's free worker
//! seats for its own zstd workers (all of them when it is alone; it waits when none is
//! free), so zstd layers do not oversubscribe the CPUs either.
//!
//! Memory is bounded: a gzip layer has at most [`BLOCKS_PER_THREAD`] blocks per thread
//! (plus two) in flight, each [`GZIP_BLOCK`] bytes in and about as much out; a zstd layer
//! holds a few jobs of [`ZSTD_JOB_SIZE`] per worker.
//!
//! **Reusing gzip blocks.** A block's compressed bytes depend only on the level, its
//! dictionary, its input and whether it is the last block (each is deflated by a new
//! compressor). A writer given a [`BlockSource`] ([`CompressPool::writer_with_blocks`])
//! keys every block by a sha256 of exactly that ([`block_key`], with a fingerprint of the
//! deflate library so that a changed library never matches an old block), asks the source
//! for the block's compressed bytes before deflating it, and reports every block it wrote
//! ([`GzipBlocks`]: key, place in the stream, CRC-32, sha256 of the compressed bytes) for
//! the caller to remember. The output is the same bytes with or without a source: a
//! source only saves the deflating. The keys are computed on the compressing threads.
//!
//! Must not: know what it compresses (tars, blobs and the store are the caller's, and so
//! is where a [`BlockSource`] finds its bytes).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, mpsc};
use std::thread::JoinHandle;

use flate2::{Compress, Crc, FlushCompress, Status};
use sha2::{Digest as _, Sha256};
use zstd::zstd_safe::{self, CCtx, CParameter, InBuffer, OutBuffer};

use super::{Algorithm, Compression};

/// Input bytes per gzip block. Part of the output format: changing it changes every gzip
/// layer digest.
pub const GZIP_BLOCK: usize = 128 * 1024;
/// How much input before a block is its dictionary (deflate's whole window).
const GZIP_DICTIONARY: usize = 32 * 1024;
/// zstd job size (`ZSTD_c_jobSize`). Part of the output format, as [`GZIP_BLOCK`]; smaller
/// than zstd's default at level 3 (8 MiB), which would hold tens of MiB per worker.
pub const ZSTD_JOB_SIZE: u32 = 2 << 20;
/// gzip blocks queued or being compressed per thread of the pool, per layer.
pub const BLOCKS_PER_THREAD: usize = 2;
/// The most blocks a writer reports in [`GzipBlocks::records`] (8 GiB of input; about
/// 5 MiB of records): later blocks of a bigger layer are compressed as usual and not
/// reported, which bounds the memory.
pub const MAX_RECORDED_BLOCKS: usize = 1 << 16;
/// The most threads [`CompressPool::shared`] starts, whatever the number of CPUs (memory
/// grows with it).
const MAX_SHARED_THREADS: usize = 32;

/// The gzip header: no name, mtime 0, no extra flags, OS "unknown" (255) (at level 6;
/// see [`gzip_header`]).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// The gzip header of a stream at `level`: [`GZIP_HEADER`], its extra flags byte set as
/// gzip and Go's `compress/gzip` set it (2 at level 9, the slowest; 4 at level 1, the
/// fastest; 0 otherwise).
fn gzip_header(level: u32) -> [u8; 10] {
    let mut header = GZIP_HEADER;
    header[8] = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    header
}

/// The key of a gzip block: sha256 over what its compressed bytes depend on (see
/// [`block_key`]).
pub type BlockKey = [u8; 32];

/// One gzip block a writer wrote, as a [`BlockSource`] needs it to give the same bytes
/// back later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRecord {
    /// The block's key.
    pub key: BlockKey,
    /// Where its compressed bytes start in the gzip stream (the header included).
    pub offset: u64,
    /// How many compressed bytes it has.
    pub length: u32,
    /// How many input bytes it has.
    pub input_length: u32,
    /// The CRC-32 of its input.
    pub crc: u32,
    /// sha256 of its compressed bytes.
    pub digest: [u8; 32],
}

/// Where a gzip writer may find blocks compressed before (the caller's: a store keeps
/// them in its blobs).
pub trait BlockSource: Send + Sync {
    /// Puts into `output` the compressed bytes of the block with `key` (an input of
    /// `input_length` bytes whose CRC-32 is `crc`) and returns their sha256, when they
    /// are known and verified; `None` when not (the block is then deflated; `output` may
    /// have been written to).
    fn fetch(
        &self,
        key: &BlockKey,
        input_length: usize,
        crc: u32,
        output: &mut Vec<u8>,
    ) -> Option<[u8; 32]>;
}

/// What a gzip writer given a [`BlockSource`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GzipBlocks {
    /// The blocks in stream order (the first [`MAX_RECORDED_BLOCKS`]).
    pub records: Vec<BlockRecord>,
    /// Blocks written.
    pub blocks: u64,
    /// Of those, blocks whose bytes came from the source instead of being deflated.
    pub reused: u64,
}

/// The key of a gzip block: sha256 over a format tag, a fingerprint of the deflate library
/// at `level` (what it makes of a fixed sample: a library that deflates differently gives
/// other keys), the level, the last-block flag, the dictionary's length, the dictionary
/// and the input.
pub fn block_key(level: u32, last: bool, dictionary: &[u8], input: &[u8]) -> BlockKey {
    let mut hasher = Sha256::new();
    hasher.update(b"xbuild gzip block 1\0");
    hasher.update(engine_fingerprint(level));
    hasher.update([u8::try_from(level).unwrap_or(u8::MAX), u8::from(last)]);
    hasher.update(
        u32::try_from(dictionary.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    hasher.update(dictionary);
    hasher.update(input);
    hasher.finalize().into()
}

/// sha256 of what the deflate library makes of a fixed sample at `level` (a middle block
/// and a last one, with a dictionary): computed once per level and process.
fn engine_fingerprint(level: u32) -> [u8; 32] {
    static FINGERPRINTS: [OnceLock<[u8; 32]>; 10] = [const { OnceLock::new() }; 10];
    let compute = || {
        let mut sample = Vec::with_capacity(72 * 1024);
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        while sample.len() < 72 * 1024 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Words from a small vocabulary, with random bytes now and then: matches near
            // and far, literals, several block types.
            let word = state % 61;
            if word == 0 {
                sample.extend_from_slice(&state.to_le_bytes());
            } else {
                sample.extend_from_slice(format!("w{word} ").as_bytes());
            }
        }
        let (dictionary, input) = sample.split_at(8 * 1024);
        let mut hasher = Sha256::new();
        let mut output = Vec::new();
        for last in [false, true] {
            match deflate_block(level, dictionary, input, last, &mut output) {
                Ok(()) => hasher.update(&output),
                Err(error) => hasher.update(error.to_string()),
            }
        }
        hasher.finalize().into()
    };
    match FINGERPRINTS.get(level as usize) {
        Some(cell) => *cell.get_or_init(compute),
        None => compute(),
    }
}

/// Threads that compress layers: a pool of gzip workers and seats for zstd workers.
pub struct CompressPool {
    threads: usize,
    jobs: Mutex<Option<mpsc::Sender<GzipJob>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// zstd worker seats not taken.
    free_seats: Mutex<usize>,
    seat_freed: Condvar,
}

impl std::fmt::Debug for CompressPool {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CompressPool")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

/// One gzip block to compress.
struct GzipJob {
    index: u64,
    level: u32,
    input: Vec<u8>,
    dictionary: Vec<u8>,
    last: bool,
    output: Vec<u8>,
    reply: mpsc::Sender<GzipDone>,
    /// Where the block may be found already compressed (and then it is keyed).
    source: Option<Arc<dyn BlockSource>>,
}

/// A compressed gzip block, with its buffers given back for the next blocks.
struct GzipDone {
    index: u64,
    result: io::Result<BlockDone>,
    input: Vec<u8>,
    dictionary: Vec<u8>,
    output: Vec<u8>,
}

impl CompressPool {
    /// A pool of `threads` compressing threads (at least one), started now.
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let (sender, receiver) = mpsc::channel::<GzipJob>();
        let receiver = Arc::new(Mutex::new(receiver));
        let workers = (0..threads)
            .map(|index| {
                let receiver = Arc::clone(&receiver);
                std::thread::Builder::new()
                    .name(format!("xbuild-gzip-{index}"))
                    .spawn(move || gzip_worker(&receiver))
            })
            .filter_map(Result::ok)
            .collect::<Vec<_>>();
        Self {
            // A thread the system refused is one less worker, not a failure (at least one
            // is needed: without any, gzip blocks would wait forever).
            threads: workers.len().max(1),
            jobs: Mutex::new((!workers.is_empty()).then_some(sender)),
            workers: Mutex::new(workers),
            free_seats: Mutex::new(threads),
            seat_freed: Condvar::new(),
        }
    }

    /// The process's pool: one thread per CPU (at most 32), or the number
    /// `XBUILD_COMPRESS_THREADS` gives; started on first use.
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<CompressPool> = OnceLock::new();
        SHARED.get_or_init(|| {
            let configured = std::env::var(crate::env::XBUILD_COMPRESS_THREADS)
                .ok()
                .and_then(|value| value.trim().parse::<usize>().ok())
                .filter(|&count| count > 0);
            let threads = configured.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map_or(1, std::num::NonZero::get)
                    .min(MAX_SHARED_THREADS)
            });
            Self::new(threads)
        })
    }

    /// How many threads compress.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// A writer that compresses what is written to it into `out`; [`Compressor::finish`]
    /// ends the stream. A zstd writer first waits for a free worker seat.
    ///
    /// # Errors
    /// Writing the gzip header, or zstd refusing its parameters.
    pub fn writer<W: Write>(
        &self,
        compression: Compression,
        out: W,
    ) -> io::Result<Compressor<'_, W>> {
        self.writer_with_blocks(compression, out, None)
    }

    /// As [`Self::writer`]; a gzip writer also looks for each block in `source` before
    /// deflating it and reports its blocks ([`Compressor::finish_blocks`]). The bytes are
    /// the same as without a source. zstd and uncompressed writers ignore `source` (they
    /// have no blocks).
    ///
    /// # Errors
    /// As [`Self::writer`].
    pub fn writer_with_blocks<W: Write>(
        &self,
        compression: Compression,
        out: W,
        source: Option<Arc<dyn BlockSource>>,
    ) -> io::Result<Compressor<'_, W>> {
        let level = compression.level();
        Ok(match compression.algorithm() {
            Algorithm::Gzip => Compressor::Gzip(GzipWriter::new(
                self,
                out,
                u32::try_from(level).unwrap_or(super::GZIP_LEVEL),
                source,
            )?),
            Algorithm::Zstd => Compressor::Zstd(ZstdWriter::new(self, out, level)?),
            Algorithm::None => Compressor::None(out),
        })
    }

    fn lock_seats(&self) -> MutexGuard<'_, usize> {
        self.free_seats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes every free seat, at least one (waiting for it).
    fn take_seats(&self) -> Seats<'_> {
        let mut free = self.lock_seats();
        while *free == 0 {
            free = self
                .seat_freed
                .wait(free)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let count = *free;
        *free = 0;
        Seats { pool: self, count }
    }

    fn send(&self, job: GzipJob) -> io::Result<()> {
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        jobs.as_ref()
            .and_then(|sender| sender.send(job).ok())
            .ok_or_else(|| io::Error::other("the gzip threads are gone"))
    }
}

impl Drop for CompressPool {
    fn drop(&mut self) {
        // Closing the queue ends the workers once it is empty.
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Ok(mut workers) = self.workers.lock() {
            for worker in workers.drain(..) {
                let _ = worker.join();
            }
        }
    }
}

/// zstd worker seats taken from a pool, given back when dropped.
struct Seats<'p> {
    pool: &'p CompressPool,
    count: usize,
}

impl Drop for Seats<'_> {
    fn drop(&mut self) {
        *self.pool.lock_seats() += self.count;
        self.pool.seat_freed.notify_all();
    }
}

/// A block compressed (or found).
struct BlockDone {
    crc: Crc,
    /// With a source: the block's key, the sha256 of its compressed bytes, and whether
    /// they came from the source.
    keyed: Option<(BlockKey, [u8; 32], bool)>,
}

/// One gzip thread: compresses blocks until the pool is dropped.
fn gzip_worker(jobs: &Mutex<mpsc::Receiver<GzipJob>>) {
    loop {
        let job = {
            let Ok(receiver) = jobs.lock() else {
                return;
            };
            match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let GzipJob {
            index,
            level,
            input,
            dictionary,
            last,
            mut output,
            reply,
            source,
        } = job;
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            compress_block(
                level,
                &dictionary,
                &input,
                last,
                source.as_deref(),
                &mut output,
            )
        }))
        .unwrap_or_else(|_| Err(io::Error::other("compressing a gzip block panicked")));
        // The layer may have given up (an error elsewhere): nobody to tell then.
        let _ = reply.send(GzipDone {
            index,
            result,
            input,
            dictionary,
            output,
        });
    }
}

/// One block into `output`: taken from `source` when it has the block's key, else
/// deflated ([`deflate_block`]); the same bytes either way.
fn compress_block(
    level: u32,
    dictionary: &[u8],
    input: &[u8],
    last: bool,
    source: Option<&dyn BlockSource>,
    output: &mut Vec<u8>,
) -> io::Result<BlockDone> {
    let mut crc = Crc::new();
    crc.update(input);
    let Some(source) = source else {
        deflate_block(level, dictionary, input, last, output)?;
        return Ok(BlockDone { crc, keyed: None });
    };
    let key = block_key(level, last, dictionary, input);
    if let Some(digest) = source.fetch(&key, input.len(), crc.sum(), output) {
        return Ok(BlockDone {
            crc,
            keyed: Some((key, digest, true)),
        });
    }
    deflate_block(level, dictionary, input, last, output)?;
    let digest = Sha256::digest(output.as_slice()).into();
    Ok(BlockDone {
        crc,
        keyed: Some((key, digest, false)),
    })
}

/// Deflates one block into `output` (raw deflate, cleared first): the dictionary first,
/// then the block, ended with a sync flush (byte-aligned, not final) or, for the last
/// block, as the end of the stream.
///
/// Each block gets a new compressor. A reset one is not the same: zlib-rs's reset leaves
/// the previous stream's bytes in the window beyond the new data, where the match finder
/// looks at the end of the input (the result is clamped, but the choice between matches
/// is not), so the output would depend on which block the thread compressed before. A new
/// one starts from a zeroed window; its cost (about 300 KiB allocated and zeroed) is
/// small beside deflating 128 KiB.
fn deflate_block(
    level: u32,
    dictionary: &[u8],
    input: &[u8],
    last: bool,
    output: &mut Vec<u8>,
) -> io::Result<()> {
    let mut deflate = Compress::new(flate2::Compression::new(level), false);
    if !dictionary.is_empty() {
        deflate
            .set_dictionary(dictionary)
            .map_err(io::Error::other)?;
    }
    output.clear();
    output.reserve(input.len() + input.len() / 16 + 64);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let start = deflate.total_in();
    loop {
        if output.capacity() - output.len() < 64 {
            output.reserve(output.capacity() / 2 + 64);
        }
        let consumed = usize::try_from(deflate.total_in() - start).unwrap_or(usize::MAX);
        let status = deflate
            .compress_vec(&input[consumed.min(input.len())..], output, flush)
            .map_err(io::Error::other)?;
        let consumed = usize::try_from(deflate.total_in() - start).unwrap_or(usize::MAX);
        match status {
            Status::StreamEnd => break,
            // A flush is complete when all input is in and the output did not fill the
            // space it had (zlib's rule: no room left may mean more to come).
            Status::Ok | Status::BufError => {
                if !last && consumed >= input.len() && output.len() < output.capacity() {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// A stream being compressed into `W` (see [`CompressPool::writer`]).
pub enum Compressor<'p, W: Write> {
    /// gzip blocks on the pool's threads.
    Gzip(GzipWriter<'p, W>),
    /// zstd, multithreaded.
    Zstd(ZstdWriter<'p, W>),
    /// Bytes as they are.
    None(W),
}

impl<W: Write> Compressor<'_, W> {
    /// Ends the stream (the last block, the trailer) and returns the writer.
    ///
    /// # Errors
    /// Compression or write failures.
    pub fn finish(self) -> io::Result<W> {
        Ok(self.finish_blocks()?.0)
    }

    /// As [`Self::finish`], with the blocks written when this is a gzip writer given a
    /// [`BlockSource`].
    ///
    /// # Errors
    /// As [`Self::finish`].
    pub fn finish_blocks(self) -> io::Result<(W, Option<GzipBlocks>)> {
        match self {
            Self::Gzip(writer) => writer.finish_blocks(),
            Self::Zstd(writer) => Ok((writer.finish()?, None)),
            Self::None(out) => Ok((out, None)),
        }
    }
}

impl<W: Write> Write for Compressor<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Self::Gzip(writer) => writer.write(bytes),
            Self::Zstd(writer) => writer.write(bytes),
            Self::None(out) => out.write(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Gzip(writer) => writer.flush(),
            Self::Zstd(writer) => writer.flush(),
            Self::None(out) => out.flush(),
        }
    }
}

/// gzip in independent blocks on a [`CompressPool`] (see the module documentation).
pub struct GzipWriter<'p, W: Write> {
    pool: &'p CompressPool,
    out: W,
    /// The deflate level of every block (0 to 9).
    level: u32,
    /// The block being filled.
    block: Vec<u8>,
    /// The last [`GZIP_DICTIONARY`] bytes of the block before `block`.
    dictionary: Vec<u8>,
    /// Blocks handed to the pool so far.
    submitted: u64,
    /// Blocks written to `out` so far.
    written: u64,
    /// Compressed blocks that came back before an earlier one.
    ready: BTreeMap<u64, GzipDone>,
    replies: mpsc::Receiver<GzipDone>,
    reply: mpsc::Sender<GzipDone>,
    /// Buffers given back, for the next blocks.
    spare: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    crc: Crc,
    /// The most blocks in flight.
    window: u64,
    /// An earlier call failed (a block's write to `out`, say on a full disk): the stream
    /// has a hole, so every later call fails at once instead of waiting for a block that
    /// will never come back.
    broken: bool,
    /// Where blocks may be found already compressed.
    source: Option<Arc<dyn BlockSource>>,
    /// The blocks written, when there is a source.
    blocks: GzipBlocks,
    /// Bytes written to `out` so far (the header included): where the next block starts.
    offset: u64,
}

impl<'p, W: Write> GzipWriter<'p, W> {
    fn new(
        pool: &'p CompressPool,
        mut out: W,
        level: u32,
        source: Option<Arc<dyn BlockSource>>,
    ) -> io::Result<Self> {
        let header = gzip_header(level);
        out.write_all(&header)?;
        let (reply, replies) = mpsc::channel();
        Ok(Self {
            pool,
            out,
            level,
            block: Vec::with_capacity(GZIP_BLOCK),
            dictionary: Vec::new(),
            submitted: 0,
            written: 0,
            ready: BTreeMap::new(),
            replies,
            reply,
            spare: Vec::new(),
            crc: Crc::new(),
            window: (pool.threads * BLOCKS_PER_THREAD + 2) as u64,
            broken: false,
            source,
            blocks: GzipBlocks::default(),
            offset: header.len() as u64,
        })
    }

    /// Hands the current block to the pool (waiting while the window is full).
    fn submit(&mut self, last: bool) -> io::Result<()> {
        self.check()?;
        while self.submitted - self.written >= self.window {
            self.receive(true)?;
        }
        let (next_block, mut next_dictionary, output) = self.spare.pop().unwrap_or_else(|| {
            (
                Vec::with_capacity(GZIP_BLOCK),
                Vec::with_capacity(GZIP_DICTIONARY),
                Vec::new(),
            )
        });
        let input = std::mem::replace(&mut self.block, next_block);
        // Every block but the last is GZIP_BLOCK bytes, more than the dictionary.
        next_dictionary.clear();
        next_dictionary.extend_from_slice(&input[input.len().saturating_sub(GZIP_DICTIONARY)..]);
        let dictionary = std::mem::replace(&mut self.dictionary, next_dictionary);
        if let Err(error) = self.pool.send(GzipJob {
            index: self.submitted,
            level: self.level,
            input,
            dictionary,
            last,
            output,
            reply: self.reply.clone(),
            source: self.source.clone(),
        }) {
            self.broken = true;
            return Err(error);
        }
        self.submitted += 1;
        // Write what is done already, without waiting.
        self.receive(false)
    }

    /// Takes the finished blocks (waiting for one when `wait`), writes those whose turn
    /// it is.
    fn receive(&mut self, wait: bool) -> io::Result<()> {
        self.check()?;
        let result = self.receive_unchecked(wait);
        self.broken = result.is_err();
        result
    }

    /// Fails when an earlier call did.
    fn check(&self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(
                "an earlier write of this compressed stream failed",
            ));
        }
        Ok(())
    }

    fn receive_unchecked(&mut self, wait: bool) -> io::Result<()> {
        if wait {
            let done = self
                .replies
                .recv()
                .map_err(|_| io::Error::other("the gzip threads are gone"))?;
            self.ready.insert(done.index, done);
        }
        while let Ok(done) = self.replies.try_recv() {
            self.ready.insert(done.index, done);
        }
        while let Some(done) = self.ready.remove(&self.written) {
            let BlockDone { crc, keyed } = done.result?;
            self.out.write_all(&done.output)?;
            self.crc.combine(&crc);
            if let Some((key, digest, reused)) = keyed {
                self.blocks.blocks += 1;
                self.blocks.reused += u64::from(reused);
                if self.blocks.records.len() < MAX_RECORDED_BLOCKS {
                    self.blocks.records.push(BlockRecord {
                        key,
                        offset: self.offset,
                        length: u32::try_from(done.output.len()).unwrap_or(u32::MAX),
                        input_length: u32::try_from(done.input.len()).unwrap_or(u32::MAX),
                        crc: crc.sum(),
                        digest,
                    });
                }
            }
            self.offset += done.output.len() as u64;
            self.written += 1;
            let (mut input, mut dictionary, output) = (done.input, done.dictionary, done.output);
            input.clear();
            dictionary.clear();
            self.spare.push((input, dictionary, output));
        }
        Ok(())
    }

    /// Compresses the last block, writes every block and the trailer; returns `out`.
    ///
    /// # Errors
    /// Compression or write failures.
    pub fn finish(self) -> io::Result<W> {
        Ok(self.finish_blocks()?.0)
    }

    /// As [`Self::finish`], with the blocks written when the writer has a
    /// [`BlockSource`].
    ///
    /// # Errors
    /// As [`Self::finish`].
    pub fn finish_blocks(mut self) -> io::Result<(W, Option<GzipBlocks>)> {
        self.submit(true)?;
        while self.written < self.submitted {
            self.receive(true)?;
        }
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        self.out.write_all(&self.crc.amount().to_le_bytes())?;
        let blocks = self.source.is_some().then_some(self.blocks);
        Ok((self.out, blocks))
    }
}

impl<W: Write> Write for GzipWriter<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.check()?;
        let take = bytes.len().min(GZIP_BLOCK - self.block.len());
        self.block.extend_from_slice(&bytes[..take]);
        if self.block.len() == GZIP_BLOCK {
            self.submit(false)?;
        }
        Ok(take)
    }

    /// Writes the blocks already compressed; never cuts a block (that would change the
    /// output).
    fn flush(&mut self) -> io::Result<()> {
        self.receive(false)?;
        self.out.flush()
    }
}

/// zstd in its multithreaded mode, with the pool's free seats as workers.
pub struct ZstdWriter<'p, W: Write> {
    context: CCtx<'static>,
    out: W,
    buffer: Vec<u8>,
    _seats: Seats<'p>,
}

impl<'p, W: Write> ZstdWriter<'p, W> {
    fn new(pool: &'p CompressPool, out: W, level: i32) -> io::Result<Self> {
        let seats = pool.take_seats();
        let mut context =
            CCtx::try_create().ok_or_else(|| io::Error::other("zstd: no compression context"))?;
        let workers = u32::try_from(seats.count).unwrap_or(u32::MAX);
        for parameter in [
            CParameter::CompressionLevel(level),
            CParameter::NbWorkers(workers),
            CParameter::JobSize(ZSTD_JOB_SIZE),
        ] {
            context.set_parameter(parameter).map_err(zstd_error)?;
        }
        Ok(Self {
            context,
            out,
            buffer: Vec::with_capacity(CCtx::out_size()),
            _seats: seats,
        })
    }

    fn write_buffer(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buffer)?;
        self.buffer.clear();
        Ok(())
    }

    /// Ends the frame and returns `out`.
    ///
    /// # Errors
    /// Compression or write failures.
    pub fn finish(mut self) -> io::Result<W> {
        loop {
            let remaining = {
                let mut output = OutBuffer::around(&mut self.buffer);
                self.context.end_stream(&mut output).map_err(zstd_error)?
            };
            self.write_buffer()?;
            if remaining == 0 {
                break;
            }
        }
        Ok(self.out)
    }
}

impl<W: Write> Write for ZstdWriter<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut input = InBuffer::around(bytes);
        while input.pos() < bytes.len() {
            {
                let mut output = OutBuffer::around(&mut self.buffer);
                // Never a flush: where jobs end must depend on the bytes only.
                self.context
                    .compress_stream2(
                        &mut output,
                        &mut input,
                        zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_continue,
                    )
                    .map_err(zstd_error)?;
            }
            self.write_buffer()?;
        }
        Ok(bytes.len())
    }

    /// Flushes `out` only: a zstd flush would end the current job early and change the
    /// output.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn zstd_error(code: usize) -> io::Error {
    io::Error::other(format!("zstd: {}", zstd_safe::get_error_name(code)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;

    /// Bytes that compress like a mix of text and binary: several blocks' worth.
    pub(crate) fn sample(length: usize) -> Vec<u8> {
        let words: [&[u8]; 8] = [
            b"layer ",
            b"digest ",
            b"fn main() {\n",
            b"    let x = 1;\n",
            b"}\n",
            b"#include ",
            b"<stdio.h>\n",
            b"return 0;\n",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut out = Vec::with_capacity(length);
        while out.len() < length {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state % 7 == 0 {
                out.extend_from_slice(&state.to_le_bytes());
            } else {
                out.extend_from_slice(words[(state % 8) as usize]);
            }
        }
        out.truncate(length);
        out
    }

    /// Compresses `input` on `pool`, writing it in pieces of `piece` bytes.
    fn compress(
        pool: &CompressPool,
        compression: Compression,
        input: &[u8],
        piece: usize,
    ) -> Vec<u8> {
        let mut writer = pool.writer(compression, Vec::new()).unwrap();
        for part in input.chunks(piece) {
            writer.write_all(part).unwrap();
        }
        writer.finish().unwrap()
    }

    /// A sink that fails (as a full disk does) once it holds `room` bytes.
    struct Full {
        room: usize,
        held: usize,
    }

    impl Write for Full {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if self.held + bytes.len() > self.room {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            self.held += bytes.len();
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A failed block write leaves a hole: every later call fails at once (it once waited
    /// forever for the block it had dropped, and a full disk hung the build).
    #[test]
    fn a_failed_write_fails_every_later_call_instead_of_waiting() {
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let pool = CompressPool::new(2);
            let mut writer = pool
                .writer(Compression::Gzip, Full { room: 100, held: 0 })
                .unwrap();
            let input = sample(20 * GZIP_BLOCK);
            let mut failed = false;
            for part in input.chunks(4096) {
                if writer.write_all(part).is_err() {
                    failed = true;
                    // What a tar builder's drop does after an error: write on.
                    let _ = writer.write_all(&[0; 1024]);
                    let _ = writer.flush();
                    break;
                }
            }
            let finish = writer.finish().map(|_| ());
            let _ = done.send((failed, finish.is_err()));
        });
        let (failed, finish_failed) = finished
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the writer hung after a failed write");
        assert!(failed && finish_failed);
    }

    #[test]
    fn output_depends_only_on_the_input_bytes() {
        let pools = [
            CompressPool::new(1),
            CompressPool::new(2),
            CompressPool::new(4),
        ];
        for length in [0, 1, GZIP_BLOCK, 5 * GZIP_BLOCK + 17, 5 << 20] {
            let input = sample(length);
            for compression in [Compression::Gzip, Compression::Zstd] {
                let reference = compress(&pools[0], compression, &input, 1 << 20);
                for pool in &pools {
                    for piece in [1000, 1 << 20] {
                        assert!(
                            compress(pool, compression, &input, piece) == reference,
                            "{compression:?}, {length} bytes, {} threads, pieces of {piece}",
                            pool.threads()
                        );
                    }
                }
                let mut decoded = Vec::new();
                super::super::decompressed(&reference[..])
                    .unwrap()
                    .read_to_end(&mut decoded)
                    .unwrap();
                assert!(
                    decoded == input,
                    "{compression:?} round trip, {length} bytes"
                );
            }
        }
    }

    /// Every level gives the same bytes on any number of threads and for any split of
    /// the input into writes (block boundaries depend on the input only), and levels
    /// differ from each other.
    #[test]
    fn every_level_depends_only_on_the_input_bytes() {
        let pools = [CompressPool::new(1), CompressPool::new(3)];
        let input = sample(3 * GZIP_BLOCK + 4099);
        let mut levels: Vec<Compression> = super::super::GZIP_LEVELS
            .map(|level| Compression::with_level(Algorithm::Gzip, level.into()).unwrap())
            .collect();
        levels.extend(
            [-5, 1, 3, 9, 19].map(|level| Compression::with_level(Algorithm::Zstd, level).unwrap()),
        );
        let mut outputs = Vec::new();
        for compression in levels {
            let reference = compress(&pools[0], compression, &input, 1 << 20);
            for piece in [777, 1 << 20] {
                assert!(
                    compress(&pools[1], compression, &input, piece) == reference,
                    "{compression}, pieces of {piece}"
                );
            }
            let mut decoded = Vec::new();
            super::super::decompressed(&reference[..])
                .unwrap()
                .read_to_end(&mut decoded)
                .unwrap();
            assert!(decoded == input, "{compression} round trip");
            outputs.push((compression, reference));
        }
        let gzip = |level: i64| {
            let wanted = Compression::with_level(Algorithm::Gzip, level).unwrap();
            outputs.iter().find(|(c, _)| *c == wanted).unwrap().1.len()
        };
        // Stored blocks are bigger than the input; level 9 is the smallest.
        assert!(gzip(0) > input.len() && gzip(1) > gzip(9) && gzip(6) >= gzip(9));
        let zstd = |level: i64| {
            let wanted = Compression::with_level(Algorithm::Zstd, level).unwrap();
            outputs
                .iter()
                .find(|(c, _)| *c == wanted)
                .unwrap()
                .1
                .clone()
        };
        assert!(zstd(19) != zstd(3) && zstd(-5) != zstd(3));
        let default = compress(&pools[0], Compression::Gzip, &input, 1 << 20);
        assert!(
            outputs
                .iter()
                .find(|(c, _)| *c == Compression::Gzip)
                .unwrap()
                .1
                == default,
            "gzip at level 6 is the default gzip"
        );
        // Go's extra flags byte: 2 at the slowest level, 4 at the fastest.
        let header = |level: i64| {
            let wanted = Compression::with_level(Algorithm::Gzip, level).unwrap();
            outputs.iter().find(|(c, _)| *c == wanted).unwrap().1[8]
        };
        assert_eq!((header(9), header(1), header(6)), (2, 4, 0));
    }

    #[test]
    fn gzip_is_one_member_with_header_and_trailer() {
        let input = sample(3 * GZIP_BLOCK + 5);
        let bytes = compress(&CompressPool::new(2), Compression::Gzip, &input, 4096);
        assert_eq!(bytes[..10], GZIP_HEADER);
        let mut crc = Crc::new();
        crc.update(&input);
        let trailer = &bytes[bytes.len() - 8..];
        assert_eq!(trailer[..4], crc.sum().to_le_bytes());
        assert_eq!(trailer[4..], (input.len() as u32).to_le_bytes());
        // A single-member decoder reads all of it: one member, not several.
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert!(decoded == input);
    }

    #[test]
    fn gzip_blocks_use_the_dictionary() {
        // The second block repeats the end of the first (closer than deflate's farthest
        // match, a little under 32 KiB): found in its dictionary, it costs
        // a few bytes instead of what it costs alone.
        let mut input = sample(GZIP_BLOCK);
        input.extend_from_within(GZIP_BLOCK - GZIP_DICTIONARY / 2..);
        let pool = CompressPool::new(1);
        let first = compress(&pool, Compression::Gzip, &input[..GZIP_BLOCK], GZIP_BLOCK);
        let both = compress(&pool, Compression::Gzip, &input, GZIP_BLOCK);
        let alone = compress(&pool, Compression::Gzip, &input[GZIP_BLOCK..], GZIP_BLOCK);
        let cost = both.len() - first.len();
        assert!(
            cost * 20 < alone.len(),
            "the repeated block costs {cost} bytes after the first, {} alone",
            alone.len()
        );
    }

    #[test]
    fn blocks_do_not_depend_on_what_a_thread_compressed_before() {
        let input = sample(8 * GZIP_BLOCK);
        let blocks: Vec<&[u8]> = input.chunks(GZIP_BLOCK).collect();
        let dictionary = |index: usize| match index {
            0 => &[][..],
            _ => &blocks[index - 1][GZIP_BLOCK - GZIP_DICTIONARY..],
        };
        let deflate = |index: usize| {
            let mut output = Vec::new();
            deflate_block(6, dictionary(index), blocks[index], false, &mut output).unwrap();
            output
        };
        let in_order: Vec<Vec<u8>> = (0..blocks.len()).map(deflate).collect();
        for index in (0..blocks.len()).rev() {
            assert!(deflate(index) == in_order[index], "block {index}");
        }
    }

    #[test]
    fn zstd_layers_share_the_seats() {
        let pool = CompressPool::new(2);
        let first = pool.writer(Compression::Zstd, Vec::new()).unwrap();
        assert_eq!(*pool.lock_seats(), 0, "a layer alone takes every seat");
        let waiting = std::thread::scope(|scope| {
            let second = scope.spawn(|| {
                let writer = pool.writer(Compression::Zstd, Vec::new()).unwrap();
                writer.finish().unwrap().len()
            });
            std::thread::sleep(std::time::Duration::from_millis(100));
            let waiting = !second.is_finished();
            first.finish().unwrap();
            assert!(second.join().unwrap() > 0);
            waiting
        });
        assert!(waiting, "the second layer waits for a seat");
        assert_eq!(*pool.lock_seats(), 2, "seats are given back");
    }
}
