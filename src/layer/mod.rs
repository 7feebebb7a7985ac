//! Layers: deterministic tars ([`tar`]) made from an overlay upper directory, a root
//! filesystem or a file list ([`diff`]), compressed and stored as blobs with both digests
//! computed while streaming, and unpacked safely ([`apply`], over [`read`]). Paths inside
//! a root file system (a snapshot stack, a directory) resolve as in a chroot ([`tree`]).
//!
//! A layer is never held whole in memory: the tar is produced on the calling thread, which
//! also hashes it into the diff_id and writes the compressed bytes to the blob (hashing them
//! too); the compression itself runs on every core ([`compress`]: gzip in independent
//! blocks as pigz does, zstd multithreaded, the bytes the same for any number of threads),
//! with a bounded number of blocks in flight. Several layers can be committed at once with
//! [`commit_in_parallel`]; they share the same compressing threads.
//!
//! A [`Compression`] is an algorithm and its level (`compression-level`); the level is
//! part of the bytes, so it travels with the algorithm wherever a layer is made or looked
//! up. [`convert_blob`] turns a blob of one compression into another, tar unchanged
//! (`force-compression`).
//!
//! Must not decide what to build; knows nothing of Dockerfiles.

pub mod apply;
pub mod blocks;
pub mod compress;
pub mod diff;
pub mod read;
pub mod tar;
pub mod tree;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::mpsc;

use oci_spec::image::{Descriptor, Digest, MediaType};

use crate::oci::{Digester, ImageLayout, LayoutError};

pub use apply::{
    ApplyError, ApplyOptions, ApplyStats, Earlier, WhiteoutMode, apply_layer, apply_layer_linking,
};
pub use compress::{CompressPool, set_thread_niceness};
pub use diff::{
    DiffError, FileList, FileListEntry, FileStat, TreeKind, entry_from_metadata, entry_from_stat,
    normalize_entry, relink, write_made_file_list,
};
pub use tar::{EntryKind, TarEntry, TarWriter};

/// gzip's default level: 6 is gzip's and Docker's default, used when no level is given.
pub const GZIP_LEVEL: u32 = 6;
/// zstd's default level: 3 is zstd's default, used when no level is given.
pub const ZSTD_LEVEL: i32 = 3;
/// The gzip levels xbuild writes: 0 (stored, no compression) to 9 (best), as gzip's.
pub const GZIP_LEVELS: std::ops::RangeInclusive<i32> = 0..=9;
const CHUNK: usize = 1024 * 1024;
/// Tar bytes per piece handed to the thread that unpacks a layer as it is written
/// ([`unpack_file_list_layer`]); at most [`UNPACK_QUEUE`] pieces wait at once.
const UNPACK_PIECE: usize = 256 * 1024;
/// Pieces queued for the unpacking thread: bounds the memory to a few MiB.
const UNPACK_QUEUE: usize = 4;

/// A layer compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// gzip, header with no name, mtime 0, OS "unknown" (the default).
    #[default]
    Gzip,
    /// zstd.
    Zstd,
    /// No compression.
    None,
}

impl Algorithm {
    /// The name buildx gives it (`gzip`, `zstd`, `uncompressed`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::None => "uncompressed",
        }
    }
}

/// How layer blobs are compressed: an algorithm and its level. The level is part of the
/// output (a blob made at gzip level 9 is not the one made at level 6), so it travels with
/// the algorithm wherever a layer is made or looked up. Two values are equal exactly when
/// they make the same bytes: a level given as the algorithm's default equals no level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Compression {
    algorithm: Algorithm,
    /// Always set: the algorithm's default when none was asked for (0 when uncompressed).
    level: i32,
}

impl Default for Compression {
    fn default() -> Self {
        Self::Gzip
    }
}

/// A compression level the algorithm does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compression-level={level}: {reason}")]
pub struct LevelError {
    /// The level asked for.
    pub level: i64,
    /// Which levels the algorithm takes.
    pub reason: String,
}

// The constants keep the names of the enum variants this type replaced, so that
// `Compression::Gzip` still reads as the default gzip.
#[allow(non_upper_case_globals)]
impl Compression {
    /// gzip at [`GZIP_LEVEL`].
    pub const Gzip: Self = Self {
        algorithm: Algorithm::Gzip,
        level: GZIP_LEVEL as i32,
    };
    /// zstd at [`ZSTD_LEVEL`].
    pub const Zstd: Self = Self {
        algorithm: Algorithm::Zstd,
        level: ZSTD_LEVEL,
    };
    /// No compression.
    pub const None: Self = Self {
        algorithm: Algorithm::None,
        level: 0,
    };

    /// `algorithm` at its default level.
    pub fn of(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Gzip => Self::Gzip,
            Algorithm::Zstd => Self::Zstd,
            Algorithm::None => Self::None,
        }
    }

    /// `algorithm` at `level`: gzip takes 0 to 9; zstd takes zstd's own levels (its
    /// negative fast levels up to 22; 0 is zstd's default, 3); uncompressed layers have no
    /// level.
    ///
    /// # Errors
    /// A level the algorithm does not take.
    pub fn with_level(algorithm: Algorithm, level: i64) -> Result<Self, LevelError> {
        let refuse = |reason: String| LevelError { level, reason };
        let level = match algorithm {
            Algorithm::Gzip => i32::try_from(level)
                .ok()
                .filter(|level| GZIP_LEVELS.contains(level))
                .ok_or_else(|| {
                    refuse(format!(
                        "gzip takes {} to {}",
                        GZIP_LEVELS.start(),
                        GZIP_LEVELS.end()
                    ))
                })?,
            Algorithm::Zstd => {
                let (lowest, highest) = (
                    zstd::zstd_safe::min_c_level(),
                    zstd::zstd_safe::max_c_level(),
                );
                match i32::try_from(level)
                    .ok()
                    .filter(|level| (lowest..=highest).contains(level))
                {
                    Some(0) => ZSTD_LEVEL,
                    Some(level) => level,
                    None => {
                        return Err(refuse(format!(
                            "zstd takes {lowest} to {highest} (negative levels are its fast ones)"
                        )));
                    }
                }
            }
            Algorithm::None => {
                return Err(refuse("uncompressed layers have no level".to_owned()));
            }
        };
        Ok(Self { algorithm, level })
    }

    /// The algorithm.
    pub fn algorithm(self) -> Algorithm {
        self.algorithm
    }

    /// The level (the algorithm's default when none was asked for; 0 when uncompressed).
    pub fn level(self) -> i32 {
        self.level
    }

    /// Whether the level is the algorithm's default.
    pub fn default_level(self) -> bool {
        self == Self::of(self.algorithm)
    }

    /// The OCI layer media type.
    pub fn media_type(self) -> MediaType {
        match self.algorithm {
            Algorithm::Gzip => MediaType::ImageLayerGzip,
            Algorithm::Zstd => MediaType::ImageLayerZstd,
            Algorithm::None => MediaType::ImageLayer,
        }
    }

    /// Parses `gzip`, `zstd` or `uncompressed` (at the default level).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "gzip" => Some(Self::Gzip),
            "zstd" => Some(Self::Zstd),
            "uncompressed" | "none" => Some(Self::None),
            _ => None,
        }
    }

    /// The compression of a layer of `media_type` at its default level (`None`: not a
    /// layer media type xbuild reads).
    pub fn of_media_type(media_type: &MediaType) -> Option<Self> {
        match crate::oci::image::layer_compression_of(media_type)? {
            "gzip" => Some(Self::Gzip),
            "zstd" => Some(Self::Zstd),
            _ => Some(Self::None),
        }
    }
}

impl std::fmt::Display for Compression {
    /// `gzip`, `zstd`, `uncompressed`, with `,compression-level=N` when not the default.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.algorithm.name())?;
        if !self.default_level() {
            write!(formatter, ",compression-level={}", self.level)?;
        }
        Ok(())
    }
}

/// Errors making or reading layers.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The store could not be written.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The tree or file list could not be read.
    #[error(transparent)]
    Diff(#[from] DiffError),
    /// Compressing or writing the blob failed.
    #[error("writing the layer blob")]
    Write(#[source] io::Error),
    /// Reading an input tar failed.
    #[error("reading the layer input")]
    Read(#[source] io::Error),
    /// The layer could not be unpacked into its snapshot directory as it was written.
    #[error("unpacking the layer into its snapshot")]
    Unpack(#[source] ApplyError),
    /// The decompressed stream does not have the diff_id it was announced with.
    #[error("layer content does not match its diff_id: expected {expected}, got {actual}")]
    DiffIdMismatch {
        /// Announced.
        expected: Digest,
        /// Computed.
        actual: Digest,
    },
}

/// A layer blob in the store.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    /// Descriptor of the compressed blob (media type, digest, size).
    pub descriptor: Descriptor,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
    /// For a gzip blob written into a layout with a block cache ([`blocks`]): how many
    /// of its blocks were copied from earlier blobs, and how many it has.
    pub reused_blocks: Option<(u64, u64)>,
}

/// Hashes the tar bytes (the diff_id) on their way to the compressor.
struct HashingWriter<W> {
    inner: W,
    digester: Digester,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.digester.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes one layer: `fill` writes tar entries (the caller decides which), the bytes are
/// compressed and stored as a blob; returns both digests.
///
/// # Errors
/// What `fill` returns, or write failures.
pub fn write_layer<F>(
    layout: &ImageLayout,
    compression: Compression,
    clamp_mtime: Option<i64>,
    fill: F,
) -> Result<LayerBlob, LayerError>
where
    F: FnOnce(&mut TarWriter<&mut dyn Write>) -> Result<(), LayerError>,
{
    write_layer_on(
        CompressPool::shared(),
        layout,
        compression,
        clamp_mtime,
        fill,
    )
}

/// As [`write_layer`], compressing on `pool` instead of the process's shared pool (the
/// bytes are the same; benchmarks and tests choose the number of threads this way).
///
/// # Errors
/// As [`write_layer`].
pub fn write_layer_on<F>(
    pool: &CompressPool,
    layout: &ImageLayout,
    compression: Compression,
    clamp_mtime: Option<i64>,
    fill: F,
) -> Result<LayerBlob, LayerError>
where
    F: FnOnce(&mut TarWriter<&mut dyn Write>) -> Result<(), LayerError>,
{
    write_raw_layer_on(pool, layout, compression, |out| {
        let mut tar = TarWriter::new(out, clamp_mtime);
        fill(&mut tar)?;
        tar.finish().map_err(LayerError::Write)?;
        Ok(())
    })
}

/// Writes one layer from raw tar bytes that `fill` writes (no tar writer in between).
///
/// # Errors
/// What `fill` returns, or write failures.
pub fn write_raw_layer<F>(
    layout: &ImageLayout,
    compression: Compression,
    fill: F,
) -> Result<LayerBlob, LayerError>
where
    F: FnOnce(&mut dyn Write) -> Result<(), LayerError>,
{
    write_raw_layer_on(CompressPool::shared(), layout, compression, fill)
}

/// The tar is written on the calling thread, which also hashes it (the diff_id) and
/// writes the compressed bytes to the blob (hashing them too); the compression itself
/// runs on `pool`'s threads.
fn write_raw_layer_on<F>(
    pool: &CompressPool,
    layout: &ImageLayout,
    compression: Compression,
    fill: F,
) -> Result<LayerBlob, LayerError>
where
    F: FnOnce(&mut dyn Write) -> Result<(), LayerError>,
{
    let blob = layout.blob_writer()?;
    let out = io::BufWriter::with_capacity(CHUNK, blob);
    let cache = match compression.algorithm() {
        Algorithm::Gzip => blocks::BlockCache::of_layout(layout),
        Algorithm::Zstd | Algorithm::None => None,
    };
    // The tar writer writes small pieces (headers, 8 KiB of file): the compressor gets
    // them gathered.
    let source = cache
        .clone()
        .map(|cache| cache as std::sync::Arc<dyn compress::BlockSource>);
    let compressor = pool
        .writer_with_blocks(compression, out, source)
        .map_err(LayerError::Write)?;
    let mut tar = HashingWriter {
        inner: io::BufWriter::with_capacity(CHUNK, compressor),
        digester: Digester::default(),
    };
    fill(&mut tar)?;
    let HashingWriter {
        inner: compressor,
        digester,
    } = tar;
    let (blob, written) = compressor
        .into_inner()
        .map_err(|error| LayerError::Write(error.into_error()))?
        .finish_blocks()
        .map_err(LayerError::Write)?;
    let blob = blob
        .into_inner()
        .map_err(|error| LayerError::Write(error.into_error()))?;
    let (digest, size) = blob.commit(None)?;
    // The map only once its blob is in place.
    if let (Some(cache), Some(written)) = (&cache, &written) {
        cache
            .record(layout, &digest, written)
            .map_err(LayerError::Write)?;
    }
    let (diff_id, tar_size) = digester.finish();
    Ok(LayerBlob {
        descriptor: Descriptor::new(compression.media_type(), size, digest),
        diff_id,
        tar_size,
        reused_blocks: written.map(|written| (written.reused, written.blocks)),
    })
}

/// Writes a layer from a directory: an overlay upper directory (whiteouts translated) or a
/// whole root filesystem.
///
/// # Errors
/// As [`write_layer`].
pub fn write_tree_layer(
    layout: &ImageLayout,
    root: &Path,
    kind: TreeKind,
    compression: Compression,
    clamp_mtime: Option<i64>,
) -> Result<LayerBlob, LayerError> {
    write_tree_layer_on(
        CompressPool::shared(),
        layout,
        root,
        kind,
        compression,
        clamp_mtime,
    )
}

/// As [`write_tree_layer`], compressing on `pool` instead of the process's shared pool
/// (the bytes are the same: a build's background compression runs on a pool of its own).
///
/// # Errors
/// As [`write_tree_layer`].
pub fn write_tree_layer_on(
    pool: &CompressPool,
    layout: &ImageLayout,
    root: &Path,
    kind: TreeKind,
    compression: Compression,
    clamp_mtime: Option<i64>,
) -> Result<LayerBlob, LayerError> {
    write_layer_on(pool, layout, compression, clamp_mtime, |tar| {
        diff::write_tree(tar, root, kind)?;
        Ok(())
    })
}

/// The diff_id and tar size of the layer [`write_tree_layer`] would make from `root`,
/// without compressing or storing anything. A `RUN` step's layer is kept as its snapshot
/// with this diff_id; the blob is made from the snapshot only when an image, a push or a
/// cache export needs it (most layers of build stages never do).
///
/// # Errors
/// Read failures, and overlay features with no tar form.
pub fn tree_diff_id(
    root: &Path,
    kind: TreeKind,
    clamp_mtime: Option<i64>,
) -> Result<(Digest, u64), LayerError> {
    let mut digester = Digester::default();
    {
        let out = io::BufWriter::with_capacity(CHUNK, &mut digester);
        let mut tar = TarWriter::new(out, clamp_mtime);
        diff::write_tree(&mut tar, root, kind)?;
        let mut out = tar.finish().map_err(LayerError::Write)?;
        out.flush().map_err(LayerError::Write)?;
    }
    Ok(digester.finish())
}

/// Writes a layer from a list of files (`COPY`): each entry's metadata as given, content
/// read from its source file.
///
/// # Errors
/// As [`write_layer`], and duplicate or non-relative paths.
pub fn write_file_list_layer<L: FileList>(
    layout: &ImageLayout,
    mut entries: L,
    compression: Compression,
    clamp_mtime: Option<i64>,
) -> Result<LayerBlob, LayerError> {
    write_layer(layout, compression, clamp_mtime, |tar| {
        entries.normalize()?;
        entries.write(tar)?;
        Ok(())
    })
}

/// A file list's layer unpacked into its snapshot ([`unpack_file_list_layer`]).
#[derive(Debug, Clone)]
pub struct UnpackedList {
    /// sha256 of the tar.
    pub diff_id: Digest,
    /// Size of the tar.
    pub tar_size: u64,
    /// Whether the snapshot was unpacked exactly ([`ApplyOptions::exact`], as root), so
    /// that its tree gives this tar back and the blob may be made from it later. Not as
    /// root the snapshot's files are ours, not the tar's owners': the blob must be made
    /// from the list.
    pub exact: bool,
    /// Regular files made hard links to the earlier snapshot's
    /// ([`unpack_file_list_layer_linking`]) instead of being written.
    pub linked: u64,
    /// Regular files in the tar.
    pub files: u64,
    /// With an earlier snapshot, the regular files written rather than linked (relative
    /// to the target): the only ones whose data is new.
    pub written: Option<Vec<std::path::PathBuf>>,
}

/// The tar [`write_file_list_layer`] would write, unpacked into the empty directory
/// `target` in overlay form as it is written (the tar is read once, never stored nor
/// compressed). `COPY` keeps its layer as this snapshot, as `RUN` keeps its upper
/// directory: the blob is made from the snapshot only when an image, a push or a cache
/// export needs it. The tar is written and hashed on the calling thread while another
/// thread unpacks it, with a few pieces of [`UNPACK_PIECE`] bytes in between.
///
/// The snapshot's tree gives the same tar back by construction, not by a second pass: the
/// list is written in the form a directory holds it ([`diff::normalize_file_list`]) and,
/// as root, unpacked exactly ([`ApplyOptions::exact`]: anything the tree would give back
/// otherwise is an error, and the unpacker must have written as many entries as the tar
/// holds).
///
/// # Errors
/// As [`write_file_list_layer`] for reading the sources and refusing the list;
/// [`LayerError::Unpack`] when `target` cannot be written (it is then partial: the caller
/// removes it).
pub fn unpack_file_list_layer(
    mut entries: Vec<FileListEntry>,
    clamp_mtime: Option<i64>,
    target: &Path,
) -> Result<UnpackedList, LayerError> {
    unpack_file_list_layer_linking(&mut entries, clamp_mtime, target, None)
}

/// As [`unpack_file_list_layer`], taking from `earlier` (a committed snapshot, typically
/// the one the same step made in an earlier build) every regular file it holds at the same
/// path with the same metadata and content, as a hard link instead of written bytes
/// ([`apply_layer_linking`]; only in an exact unpacking, as root). The tar, and so the
/// diff_id, is the same either way: it is still written from the list and hashed whole.
/// The list is normalized in place ([`diff::normalize_file_list`]) and left to the caller,
/// who may write the blob from it too ([`write_file_list_layer`]) without a copy of it.
///
/// # Errors
/// As [`unpack_file_list_layer`].
pub fn unpack_file_list_layer_linking<L: FileList>(
    entries: &mut L,
    clamp_mtime: Option<i64>,
    target: &Path,
    earlier: Option<&Path>,
) -> Result<UnpackedList, LayerError> {
    let mut options = ApplyOptions::for_current_user(WhiteoutMode::Overlay);
    options.exact = options.set_owners;
    let mut earlier = earlier.filter(|_| options.exact).map(|root| {
        let mut earlier = Earlier::new(root);
        earlier.reserve(entries.len());
        earlier
    });
    let (sender, receiver) = mpsc::sync_channel::<Vec<u8>>(UNPACK_QUEUE);
    let linking = earlier.as_mut();
    let unpacked = std::thread::scope(|scope| {
        let unpacker = scope.spawn(move || {
            apply_layer_linking(PieceReader::new(receiver), target, &options, linking)
        });
        let mut tee = Tee {
            sender: Some(sender),
            piece: Vec::with_capacity(UNPACK_PIECE),
            digester: Digester::default(),
            hung_up: false,
        };
        let written = (|| {
            entries.normalize()?;
            let mut tar = TarWriter::new(&mut tee, clamp_mtime);
            let count = entries.write(&mut tar)?;
            tar.finish().map_err(LayerError::Write)?;
            tee.send().map_err(LayerError::Write)?;
            Ok(count)
        })();
        // Hanging up ends the unpacker's stream (early, if writing failed).
        tee.sender = None;
        let unpacked = unpacker
            .join()
            .map_err(|_| LayerError::Write(io::Error::other("the unpacking thread panicked")))?;
        match (written, unpacked) {
            // The tee could not send because the unpacker had stopped: its error is the cause.
            (Err(_), Err(unpacking)) if tee.hung_up => Err(LayerError::Unpack(unpacking)),
            (Err(error), _) => Err(error),
            (Ok(_), Err(unpacking)) => Err(LayerError::Unpack(unpacking)),
            (Ok(count), Ok(stats)) if options.exact && stats.entries != count => {
                Err(LayerError::Unpack(ApplyError::Refused {
                    entry: target.display().to_string(),
                    reason: format!(
                        "{} entries unpacked of the {count} the tar holds",
                        stats.entries
                    ),
                }))
            }
            (Ok(_), Ok(stats)) => {
                let (diff_id, tar_size) = tee.digester.finish();
                Ok(UnpackedList {
                    diff_id,
                    tar_size,
                    exact: options.exact,
                    linked: stats.linked,
                    files: stats.files,
                    written: None,
                })
            }
        }
    });
    unpacked.map(|mut unpacked| {
        unpacked.written = earlier.map(|earlier| earlier.written);
        unpacked
    })
}

/// Hashes tar bytes (the diff_id) and sends them, in pieces, to the unpacking thread.
struct Tee {
    /// `None` once the writing side is done.
    sender: Option<mpsc::SyncSender<Vec<u8>>>,
    piece: Vec<u8>,
    digester: Digester,
    /// The unpacking thread stopped taking pieces (it failed).
    hung_up: bool,
}

impl Tee {
    fn send(&mut self) -> io::Result<()> {
        if self.piece.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.piece, Vec::with_capacity(UNPACK_PIECE));
        let sent = self.sender.as_ref().map(|sender| sender.send(piece));
        if !matches!(sent, Some(Ok(()))) {
            self.hung_up = true;
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the unpacking thread stopped",
            ));
        }
        Ok(())
    }
}

impl Write for Tee {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let take = bytes.len().min(UNPACK_PIECE - self.piece.len());
        self.piece.extend_from_slice(&bytes[..take]);
        self.digester.update(&bytes[..take]);
        if self.piece.len() == UNPACK_PIECE {
            self.send()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads the pieces another thread sends, in order, until it hangs up.
struct PieceReader {
    receiver: mpsc::Receiver<Vec<u8>>,
    piece: Vec<u8>,
    position: usize,
}

impl PieceReader {
    fn new(receiver: mpsc::Receiver<Vec<u8>>) -> Self {
        Self {
            receiver,
            piece: Vec::new(),
            position: 0,
        }
    }
}

impl Read for PieceReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        while self.position == self.piece.len() {
            match self.receiver.recv() {
                Ok(piece) => {
                    self.piece = piece;
                    self.position = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let count = buffer.len().min(self.piece.len() - self.position);
        buffer[..count].copy_from_slice(&self.piece[self.position..self.position + count]);
        self.position += count;
        Ok(count)
    }
}

/// Stores an existing tar stream (plain, gzip or zstd: detected) as a layer, recompressed
/// with `compression`, bytes unchanged (`xbuild import ROOTFS.tar`).
///
/// # Errors
/// Read or write failures.
pub fn write_tar_layer(
    layout: &ImageLayout,
    input: impl Read,
    compression: Compression,
) -> Result<LayerBlob, LayerError> {
    let mut input = decompressed(input).map_err(LayerError::Read)?;
    write_raw_layer(layout, compression, |out| {
        io::copy(&mut input, out).map_err(LayerError::Read)?;
        Ok(())
    })
}

/// Converts the layer blob `blob` (in `layout`) to `compression`: its tar decompressed
/// (gzip, zstd or plain, detected) and compressed again, as BuildKit's converter does for
/// `force-compression=true`. The tar is unchanged, which is checked: the new blob's
/// diff_id must be `diff_id`.
///
/// # Errors
/// The blob is missing or unreadable, compressing or writing fails, or the tar inside is
/// not the layer `diff_id` names ([`LayerError::DiffIdMismatch`]).
pub fn convert_blob(
    layout: &ImageLayout,
    blob: &Descriptor,
    diff_id: &Digest,
    compression: Compression,
) -> Result<LayerBlob, LayerError> {
    let file = layout.open_blob(blob.digest())?;
    let converted = write_tar_layer(layout, BufReader::with_capacity(CHUNK, file), compression)?;
    if &converted.diff_id != diff_id {
        return Err(LayerError::DiffIdMismatch {
            expected: diff_id.clone(),
            actual: converted.diff_id,
        });
    }
    Ok(converted)
}

/// Opens a layer stream for reading, decompressing gzip or zstd as detected from the first
/// bytes (media types lie more often than magic numbers).
///
/// # Errors
/// Reading the first bytes fails, or the zstd decoder cannot start.
pub fn decompressed<'a>(input: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut input = BufReader::with_capacity(CHUNK, input);
    let head = input.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(input)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::Decoder::with_buffer(input)?))
    } else {
        Ok(Box::new(input))
    }
}

/// A reader that hashes what passes through it.
pub struct DigestingReader<R> {
    inner: R,
    digester: Digester,
}

impl<R: Read> DigestingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            digester: Digester::default(),
        }
    }

    /// Reads what is left (so the digest covers the whole stream) and returns the digest
    /// and size.
    ///
    /// # Errors
    /// Read failures.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.digester.finish())
    }
}

impl<R: Read> Read for DigestingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.digester.update(&buf[..read]);
        Ok(read)
    }
}

/// Commits several layers at once, one thread each (at most the number of CPUs at a time);
/// results in the order of `jobs`. The layers' compression shares the threads of
/// [`CompressPool::shared`], so this adds tar-writing threads, not compressing ones.
///
/// # Errors
/// The first failure.
pub fn commit_in_parallel<F>(jobs: Vec<F>) -> Result<Vec<LayerBlob>, LayerError>
where
    F: FnOnce() -> Result<LayerBlob, LayerError> + Send,
{
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let mut results = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter();
    loop {
        let batch: Vec<F> = jobs.by_ref().take(workers).collect();
        if batch.is_empty() {
            break;
        }
        let batch_results: Vec<Result<LayerBlob, LayerError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = batch.into_iter().map(|job| scope.spawn(job)).collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle.join().unwrap_or_else(|_| {
                        Err(LayerError::Write(io::Error::other(
                            "a layer thread panicked",
                        )))
                    })
                })
                .collect()
        });
        for result in batch_results {
            results.push(result?);
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    fn tree(dir: &Path) {
        fs::create_dir_all(dir.join("etc/ssl")).unwrap();
        fs::write(dir.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        fs::write(dir.join("etc/ssl/cert"), vec![7u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("hosts", dir.join("etc/hosts.link")).unwrap();
        fs::hard_link(dir.join("etc/hosts"), dir.join("hard")).unwrap();
    }

    #[test]
    fn same_tree_gives_same_digests_with_source_date_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::open_or_create(dir.path().join("store")).unwrap();
        let first = dir.path().join("a");
        let second = dir.path().join("b");
        tree(&first);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        tree(&second);
        for compression in [Compression::Gzip, Compression::Zstd] {
            let one =
                write_tree_layer(&layout, &first, TreeKind::RootFs, compression, Some(10)).unwrap();
            let two = write_tree_layer(&layout, &second, TreeKind::RootFs, compression, Some(10))
                .unwrap();
            assert_eq!(one.descriptor.digest(), two.descriptor.digest());
            assert_eq!(one.diff_id, two.diff_id);
            // The stored blob is what the descriptor says.
            assert!(layout.has_blob(one.descriptor.digest()));
        }
    }

    #[test]
    fn tree_diff_id_is_the_diff_id_of_the_layer_written_later() {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::open_or_create(dir.path().join("store")).unwrap();
        let root = dir.path().join("a");
        tree(&root);
        for clamp in [None, Some(10)] {
            let (diff_id, size) = tree_diff_id(&root, TreeKind::RootFs, clamp).unwrap();
            let blob = write_tree_layer(&layout, &root, TreeKind::RootFs, Compression::Gzip, clamp)
                .unwrap();
            assert_eq!(diff_id, blob.diff_id);
            assert_eq!(size, blob.tar_size);
        }
        let (unclamped, _) = tree_diff_id(&root, TreeKind::RootFs, None).unwrap();
        let (clamped, _) = tree_diff_id(&root, TreeKind::RootFs, Some(10)).unwrap();
        assert_ne!(unclamped, clamped, "the clamp is part of the tar");
    }

    /// `dir`'s entries as a `COPY` lists them (relative paths; files read from `dir`).
    fn file_list(dir: &Path) -> Vec<FileListEntry> {
        let mut entries = Vec::new();
        let mut stack = vec![std::path::PathBuf::new()];
        while let Some(relative) = stack.pop() {
            for child in fs::read_dir(dir.join(&relative)).unwrap() {
                let child = child.unwrap();
                let name = relative.join(child.file_name());
                let meta = fs::symlink_metadata(child.path()).unwrap();
                if meta.is_dir() {
                    stack.push(name.clone());
                }
                entries.push(FileListEntry {
                    entry: entry_from_metadata(&name, &child.path(), &meta).unwrap(),
                    source: meta.is_file().then(|| child.path()),
                });
            }
        }
        entries
    }

    #[test]
    fn a_file_list_unpacked_as_written_is_the_layer_and_its_tree_gives_the_same_diff_id() {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::open_or_create(dir.path().join("store")).unwrap();
        let source = dir.path().join("src");
        tree(&source);
        // Many pieces for the unpacking thread, and an empty file.
        fs::write(source.join("etc/big"), vec![3u8; 5 * UNPACK_PIECE + 7]).unwrap();
        fs::write(source.join("empty"), b"").unwrap();
        for clamp in [None, Some(10)] {
            let target = tempfile::tempdir_in(dir.path()).unwrap();
            let UnpackedList {
                diff_id,
                tar_size: size,
                ..
            } = unpack_file_list_layer(file_list(&source), clamp, target.path()).unwrap();
            let blob = write_file_list_layer(&layout, file_list(&source), Compression::Gzip, clamp)
                .unwrap();
            assert_eq!((&diff_id, size), (&blob.diff_id, blob.tar_size));
            // The blob made later from the snapshot has this diff_id.
            let (again, _) = tree_diff_id(target.path(), TreeKind::OverlayUpper, clamp).unwrap();
            assert_eq!(again, diff_id);
            assert_eq!(
                fs::read(target.path().join("etc/big")).unwrap(),
                fs::read(source.join("etc/big")).unwrap()
            );
            assert_eq!(
                fs::read_link(target.path().join("etc/hosts.link")).unwrap(),
                Path::new("hosts")
            );
        }
    }

    /// Every kind of entry a `COPY` lists comes back from the snapshot's tree as it was
    /// written, so that the blob made later from the snapshot has the step's diff_id. A
    /// symlink listed with a mode of its own (`COPY --chmod` of a directory holding links)
    /// once did not: Linux links have no mode, the tree gives 0777.
    #[test]
    fn every_listed_kind_comes_back_the_same_from_the_unpacked_tree() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        fs::create_dir(&source).unwrap();
        fs::write(source.join("content"), b"bytes").unwrap();
        let root = nix::unistd::geteuid().is_root();
        let entry = |path: &str, kind: EntryKind, mode: u32| {
            let mut entry = TarEntry::new(path, kind, mode);
            entry.mtime = 1_700_000_000;
            if root {
                entry.uid = 1234;
                entry.gid = 5678;
            }
            entry
        };
        let file = |path: &str, mode: u32| FileListEntry {
            entry: entry(path, EntryKind::File { size: 5 }, mode),
            source: Some(source.join("content")),
        };
        let other = |path: &str, kind: EntryKind, mode: u32| FileListEntry {
            entry: entry(path, kind, mode),
            source: None,
        };
        let link = |target: &str| EntryKind::Symlink {
            target: std::path::PathBuf::from(target),
        };
        let mut with_xattr = file("app/xattr", 0o644);
        with_xattr
            .entry
            .xattrs
            .insert("user.note".to_owned(), b"kept".to_vec());
        let mut entries = vec![
            other("app", EntryKind::Directory, 0o750),
            file("app/plain", 0o644),
            file("app/setuid", 0o4755),
            with_xattr,
            other("app/empty", EntryKind::File { size: 0 }, 0o600),
            other("app/fifo", EntryKind::Fifo, 0o640),
            other("app/sub", EntryKind::Directory, 0o2775),
            other("app/sub/link", link("../plain"), 0o777),
            // `COPY --chmod=640` gives every listed entry the mode, links included.
            other("app/sub/link-chmod", link("../plain"), 0o640),
            other("app/sub/link-dangling", link("/nowhere"), 0o600),
            other("app/z-empty-dir", EntryKind::Directory, 0o700),
        ];
        if root {
            entries.push(other(
                "app/zz-hard",
                EntryKind::Hardlink {
                    target: std::path::PathBuf::from("app/plain"),
                },
                0o644,
            ));
        }
        for clamp in [None, Some(10)] {
            let target = tempfile::tempdir_in(dir.path()).unwrap();
            let diff_id = unpack_file_list_layer(entries.clone(), clamp, target.path())
                .unwrap()
                .diff_id;
            let (again, _) = tree_diff_id(target.path(), TreeKind::OverlayUpper, clamp).unwrap();
            if again != diff_id {
                let listing = |bytes: Vec<u8>| {
                    let mut reader = read::TarReader::new(&bytes[..]);
                    let mut lines = Vec::new();
                    while let Some(entry) = reader.next_entry().unwrap() {
                        lines.push(format!(
                            "{} {:?} {:o} {}:{} {}",
                            entry.display_path(),
                            entry.kind,
                            entry.mode,
                            entry.uid,
                            entry.gid,
                            entry.mtime
                        ));
                    }
                    lines
                };
                let mut listed = TarWriter::new(Vec::new(), clamp);
                diff::write_file_list(&mut listed, entries.clone()).unwrap();
                let mut tree = TarWriter::new(Vec::new(), clamp);
                diff::write_tree(&mut tree, target.path(), TreeKind::OverlayUpper).unwrap();
                let (listed, tree) = (
                    listing(listed.finish().unwrap()),
                    listing(tree.finish().unwrap()),
                );
                let differ: Vec<_> = listed.iter().zip(&tree).filter(|(a, b)| a != b).collect();
                panic!("clamp {clamp:?}: the tree's tar differs from the list's: {differ:#?}");
            }
        }
    }

    /// A tar's entries, one line each (path, kind, mode, owner, mtime, xattrs, content
    /// digest), to show where two tars differ.
    fn listing(bytes: &[u8]) -> Vec<String> {
        let mut reader = read::TarReader::new(bytes);
        let mut lines = Vec::new();
        while let Some(entry) = reader.next_entry().unwrap() {
            let mut content = Vec::new();
            reader.content().read_to_end(&mut content).unwrap();
            lines.push(format!(
                "{:?} {:?} {:o} {}:{} {} {:?} {}",
                entry.display_path(),
                entry.kind,
                entry.mode,
                entry.uid,
                entry.gid,
                entry.mtime,
                entry.xattrs,
                crate::oci::sha256_digest(&content)
            ));
        }
        lines
    }

    /// Unpacks `entries` exactly and checks that the snapshot's tree gives the list's tar
    /// back, byte for byte; on a difference, the differing entries.
    fn assert_tree_gives_the_list_back(
        entries: &[FileListEntry],
        clamp: Option<i64>,
        scratch: &Path,
        what: &str,
    ) {
        let target = tempfile::tempdir_in(scratch).unwrap();
        let unpacked = unpack_file_list_layer(entries.to_vec(), clamp, target.path())
            .unwrap_or_else(|error| panic!("{what}: unpacking: {error:?}"));
        assert!(unpacked.exact, "{what}: not unpacked exactly");
        let mut listed = TarWriter::new(Vec::new(), clamp);
        diff::write_file_list(&mut listed, entries.to_vec()).unwrap();
        let listed = listed.finish().unwrap();
        let mut tree = TarWriter::new(Vec::new(), clamp);
        diff::write_tree(&mut tree, target.path(), TreeKind::OverlayUpper).unwrap();
        let tree = tree.finish().unwrap();
        if listed != tree {
            let (listed, tree) = (listing(&listed), listing(&tree));
            let only_listed: Vec<_> = listed.iter().filter(|l| !tree.contains(l)).collect();
            let only_tree: Vec<_> = tree.iter().filter(|l| !listed.contains(l)).collect();
            panic!(
                "{what}, clamp {clamp:?}: the snapshot's tar differs from the list's\n\
                 only in the list: {only_listed:#?}\nonly in the tree: {only_tree:#?}"
            );
        }
        assert_eq!(
            crate::oci::sha256_digest(&listed),
            unpacked.diff_id,
            "{what}: the diff_id is the tar's"
        );
    }

    /// The tar a snapshot's tree gives back.
    fn tree_tar(root: &Path, clamp: Option<i64>) -> Vec<u8> {
        let mut tree = TarWriter::new(Vec::new(), clamp);
        diff::write_tree(&mut tree, root, TreeKind::OverlayUpper).unwrap();
        tree.finish().unwrap()
    }

    fn set_mtime(path: &Path, mtime: i64) {
        let time = nix::sys::time::TimeSpec::new(mtime, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &time,
            &time,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }

    fn inode(path: &Path) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::symlink_metadata(path).unwrap();
        (meta.dev(), meta.ino())
    }

    #[test]
    fn a_snapshot_linked_from_an_earlier_one_gives_the_tar_of_a_fresh_one() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: an exact unpacking (and so linking) needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        tree(&source);
        let chunk = apply::COMPARE_CHUNK;
        fs::write(source.join("etc/big"), vec![3u8; 3 * chunk + 11]).unwrap();
        fs::write(source.join("etc/tail"), vec![5u8; 3 * chunk]).unwrap();
        fs::write(source.join("same"), b"same bytes").unwrap();
        fs::write(source.join("twin"), b"same bytes").unwrap();
        fs::write(source.join("mode"), b"mode").unwrap();
        fs::write(source.join("empty"), b"").unwrap();
        // `same` and `twin`: the same content and metadata.
        for path in ["same", "twin"] {
            xattr::set(source.join(path), "user.note", b"kept").unwrap();
            set_mtime(&source.join(path), 1_000);
        }
        for clamp in [None, Some(10)] {
            let first = tempfile::tempdir_in(dir.path()).unwrap();
            let earlier = unpack_file_list_layer(file_list(&source), clamp, first.path()).unwrap();
            assert_eq!(earlier.linked, 0);
            let before = tree_tar(first.path(), clamp);
            // The earlier snapshot's `same` and `twin` made one inode: the new list keeps
            // them apart, so only one of them may be linked.
            fs::remove_file(first.path().join("twin")).unwrap();
            fs::hard_link(first.path().join("same"), first.path().join("twin")).unwrap();
            let mut changed_source = tempfile::tempdir_in(dir.path()).unwrap().keep();
            changed_source.push("src");
            std::process::Command::new("cp")
                .args(["-a"])
                .arg(&source)
                .arg(&changed_source)
                .status()
                .unwrap();
            // Changed: the last byte of a big file (compared equal up to its last chunk),
            // a mode, an extended attribute.
            let mut tail = fs::read(source.join("etc/tail")).unwrap();
            *tail.last_mut().unwrap() = 6;
            fs::write(changed_source.join("etc/tail"), &tail).unwrap();
            fs::set_permissions(
                changed_source.join("mode"),
                fs::Permissions::from_mode(0o700),
            )
            .unwrap();
            xattr::set(changed_source.join("etc/hosts"), "user.new", b"1").unwrap();
            for path in ["etc/tail", "mode", "etc/hosts"] {
                let old = fs::metadata(source.join(path)).unwrap().mtime();
                set_mtime(&changed_source.join(path), old);
            }
            let linked_dir = tempfile::tempdir_in(dir.path()).unwrap();
            let linked = unpack_file_list_layer_linking(
                &mut file_list(&changed_source),
                clamp,
                linked_dir.path(),
                Some(first.path()),
            )
            .unwrap();
            let fresh_dir = tempfile::tempdir_in(dir.path()).unwrap();
            let fresh = unpack_file_list_layer(file_list(&changed_source), clamp, fresh_dir.path())
                .unwrap();
            assert_eq!(linked.diff_id, fresh.diff_id);
            assert_eq!(
                tree_tar(linked_dir.path(), clamp),
                tree_tar(fresh_dir.path(), clamp),
                "the linked snapshot's tar is the fresh one's"
            );
            let (new, old) = (linked_dir.path(), first.path());
            // Unchanged files are the earlier inodes.
            for path in ["etc/ssl/cert", "etc/big", "empty"] {
                assert_eq!(inode(&new.join(path)), inode(&old.join(path)), "{path}");
            }
            // Changed files (`hard` is `etc/hosts`'s inode in the source, listed as a file of
            // its own), and the second name of an earlier inode, are written.
            for path in ["etc/tail", "mode", "etc/hosts", "hard"] {
                assert_ne!(inode(&new.join(path)), inode(&old.join(path)), "{path}");
            }
            assert_ne!(inode(&new.join("same")), inode(&new.join("twin")));
            assert_eq!(fs::read(new.join("etc/tail")).unwrap(), tail);
            // Linked: cert, big, empty and one of same/twin.
            assert_eq!((linked.linked, linked.files), (4, fresh.files));
            // Only the files written are listed (their data is the only new data).
            let mut written = linked.written.clone().unwrap();
            written.sort();
            let expected: Vec<PathBuf> = ["etc/hosts", "etc/tail", "hard", "mode", "twin"]
                .iter()
                .map(PathBuf::from)
                .collect();
            assert_eq!(written, expected);
            assert_eq!(fresh.written, None);
            // The earlier snapshot is untouched (its twin, made a link above, aside).
            let without_twin = |tar: &[u8]| {
                let mut lines = listing(tar);
                lines.retain(|line| !line.contains("twin"));
                lines
            };
            assert_eq!(without_twin(&tree_tar(old, clamp)), without_twin(&before));
        }
    }

    /// A name of one to 150 bytes: unusual bytes (not UTF-8, spaces, a newline, glob and
    /// shell characters, a leading `-`), never `/`, NUL, `.`, `..` or a `.wh.` prefix;
    /// `unique` keeps names apart.
    fn random_name(rng: &mut fastrand::Rng, unique: usize) -> std::ffi::OsString {
        use std::os::unix::ffi::OsStringExt;
        const BYTES: &[u8] = b"abcXYZ019-_. \n\t*?[]\\'\"$~:\xc3\xa9\xff\x80\x01";
        let length = match rng.u8(0..10) {
            0 => rng.usize(100..150),
            _ => rng.usize(1..12),
        };
        let mut name: Vec<u8> = (0..length)
            .map(|_| BYTES[rng.usize(..BYTES.len())])
            .collect();
        name.extend_from_slice(format!("~{unique}").as_bytes());
        if name.starts_with(b".") {
            name.insert(0, b'x');
        }
        std::ffi::OsString::from_vec(name)
    }

    /// A valid file capability (v2: `cap_net_bind_service`, effective).
    const CAPABILITY: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    /// A file list of every kind an unpacking can meet: deep directories, files of many
    /// sizes (empty, sparse, more than one piece), symlinks (modes of their own, long
    /// targets), hard links (to files listed after them, through other links), fifos,
    /// devices, setuid/setgid/sticky modes, owners too big for the ustar field, mtimes
    /// before 1970, past the tar's field and around the clamp, and xattrs a tree keeps or
    /// does not (`trusted.*`, `user.*` on a fifo).
    fn random_list(rng: &mut fastrand::Rng, source: &Path) -> Vec<FileListEntry> {
        const MODES: &[u32] = &[
            0o644, 0o755, 0o4755, 0o2750, 0o1777, 0o600, 0, 0o7777, 0o640,
        ];
        const IDS: &[u64] = &[0, 1, 1000, 65_534, 2_097_152];
        const MTIMES: &[i64] = &[
            0,
            1,
            -5,
            1_600_000_000,
            1_600_000_001,
            1_700_000_000,
            9_000_000_000,
        ];
        let mut directories = vec![PathBuf::new()];
        let mut files = Vec::new();
        let mut entries = Vec::new();
        let count = rng.usize(1..40);
        for unique in 0..count {
            let parent = directories[rng.usize(..directories.len())].clone();
            let path = parent.join(random_name(rng, unique));
            let kind_choice = rng.u8(0..10);
            let mut source_file = None;
            let kind = match kind_choice {
                0..=2 => EntryKind::Directory,
                3..=5 => {
                    let content = source.join(format!("content-{unique}"));
                    let file = fs::File::create(&content).unwrap();
                    let size = match rng.u8(0..5) {
                        0 => 0,
                        1 => rng.u64(1..600),
                        2 => rng.u64(600..70_000),
                        3 => 3 * UNPACK_PIECE as u64 + 11,
                        _ => {
                            // Sparse: a hole, then a byte.
                            file.set_len(1 << 20).unwrap();
                            1 << 20
                        }
                    };
                    if size > 0 && size != 1 << 20 {
                        let bytes: Vec<u8> = (0..size).map(|_| rng.u8(..)).collect();
                        fs::write(&content, bytes).unwrap();
                    }
                    if size > 0 || rng.bool() {
                        source_file = Some(content);
                    }
                    EntryKind::File { size }
                }
                6 => {
                    let target = match rng.u8(0..3) {
                        0 => PathBuf::from("/nowhere/at/all"),
                        1 => PathBuf::from("l".repeat(rng.usize(90..200))),
                        _ => PathBuf::from(random_name(rng, unique)),
                    };
                    EntryKind::Symlink { target }
                }
                7 => EntryKind::Fifo,
                8 => {
                    if rng.bool() {
                        EntryKind::CharDevice { major: 1, minor: 3 }
                    } else {
                        EntryKind::BlockDevice { major: 7, minor: 0 }
                    }
                }
                _ => EntryKind::File { size: 0 },
            };
            let mut entry = TarEntry::new(&path, kind, MODES[rng.usize(..MODES.len())]);
            entry.uid = IDS[rng.usize(..IDS.len())];
            entry.gid = IDS[rng.usize(..IDS.len())];
            entry.mtime = MTIMES[rng.usize(..MTIMES.len())];
            match rng.u8(0..6) {
                0 => {
                    entry
                        .xattrs
                        .insert("user.note".to_owned(), vec![rng.u8(..); rng.usize(0..40)]);
                }
                1 => {
                    entry
                        .xattrs
                        .insert("trusted.dropped".to_owned(), b"never written".to_vec());
                }
                2 if matches!(entry.kind, EntryKind::File { .. }) => {
                    entry
                        .xattrs
                        .insert("security.capability".to_owned(), CAPABILITY.to_vec());
                }
                _ => {}
            }
            match entry.kind {
                EntryKind::Directory => directories.push(path.clone()),
                EntryKind::File { .. } => files.push(path.clone()),
                _ => {}
            }
            entries.push(FileListEntry {
                entry,
                source: source_file,
            });
        }
        // Hard links, named after everything else: each to a file or to an earlier link,
        // wherever they sort, with metadata of their own (the file's wins).
        let mut links: Vec<PathBuf> = Vec::new();
        for unique in count..count + rng.usize(0..8) {
            if files.is_empty() {
                break;
            }
            let target = if !links.is_empty() && rng.bool() {
                links[rng.usize(..links.len())].clone()
            } else {
                files[rng.usize(..files.len())].clone()
            };
            let parent = directories[rng.usize(..directories.len())].clone();
            let path = parent.join(random_name(rng, unique));
            let mut entry = TarEntry::new(&path, EntryKind::Hardlink { target }, 0o600);
            entry.mtime = 42;
            entry.xattrs.insert("user.link".to_owned(), b"x".to_vec());
            links.push(path);
            entries.push(FileListEntry {
                entry,
                source: None,
            });
        }
        rng.shuffle(&mut entries);
        entries
    }

    /// The property behind a `COPY` snapshot's lazy blob: for any file list, the tree of
    /// the list unpacked gives the list's tar back, byte for byte (here as root, where the
    /// unpacking is exact).
    #[test]
    fn the_tree_of_any_unpacked_file_list_is_the_lists_tar() {
        if !nix::unistd::geteuid().is_root() {
            // Owners and devices need root: an unpacking elsewhere is not exact.
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for seed in 0..150 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let source = dir.path().join(format!("source-{seed}"));
            fs::create_dir(&source).unwrap();
            let entries = random_list(&mut rng, &source);
            for clamp in [None, Some(1_600_000_000)] {
                assert_tree_gives_the_list_back(
                    &entries,
                    clamp,
                    dir.path(),
                    &format!("seed {seed}"),
                );
            }
            fs::remove_dir_all(&source).unwrap();
        }
    }

    /// A hard link whose file sorts after it (`a/x` linked to `a-b`: a walk of the context
    /// by whole paths meets `a-b` first, the layer's order is `a/`, `a/x`, `a-b`) is
    /// unpacked, the first name being the file.
    #[test]
    fn a_hard_link_listed_before_its_file_is_unpacked() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let content = dir.path().join("content");
        fs::write(&content, b"linked").unwrap();
        let mut file = TarEntry::new("a-b", EntryKind::File { size: 6 }, 0o640);
        file.mtime = 7;
        let entries = vec![
            FileListEntry {
                entry: TarEntry::new("a", EntryKind::Directory, 0o755),
                source: None,
            },
            FileListEntry {
                entry: file,
                source: Some(content),
            },
            FileListEntry {
                entry: TarEntry::new(
                    "a/x",
                    EntryKind::Hardlink {
                        target: PathBuf::from("a-b"),
                    },
                    0o644,
                ),
                source: None,
            },
        ];
        assert_tree_gives_the_list_back(&entries, None, dir.path(), "link first");
        let target = tempfile::tempdir_in(dir.path()).unwrap();
        unpack_file_list_layer(entries, None, target.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        let (x, ab) = (
            fs::metadata(target.path().join("a/x")).unwrap(),
            fs::metadata(target.path().join("a-b")).unwrap(),
        );
        assert_eq!(
            (x.ino(), x.mode() & 0o7777, x.mtime()),
            (ab.ino(), 0o640, 7)
        );
    }

    /// What a snapshot cannot hold as listed is refused before anything is written: a
    /// parent not listed (the unpacking would make a directory the tar lacks), a `.wh.`
    /// name (a whiteout once unpacked), a 0/0 character device (an overlay whiteout), a
    /// hard link to something that is not a listed file.
    #[test]
    fn file_lists_a_snapshot_cannot_hold_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let listed = |path: &str, kind: EntryKind| FileListEntry {
            entry: TarEntry::new(path, kind, 0o755),
            source: None,
        };
        type Expected = fn(&DiffError) -> bool;
        let cases: Vec<(Vec<FileListEntry>, Expected)> = vec![
            (
                vec![listed("run/act", EntryKind::Directory)],
                |e| matches!(e, DiffError::MissingParent(p) if p == Path::new("run/act")),
            ),
            (
                vec![
                    listed("app", EntryKind::Directory),
                    listed("app/.wh.x", EntryKind::Fifo),
                ],
                |e| matches!(e, DiffError::ReservedName(_)),
            ),
            (
                vec![listed("null", EntryKind::CharDevice { major: 0, minor: 0 })],
                |e| matches!(e, DiffError::WhiteoutDevice(_)),
            ),
            (
                vec![
                    listed("d", EntryKind::Directory),
                    listed(
                        "h",
                        EntryKind::Hardlink {
                            target: PathBuf::from("d"),
                        },
                    ),
                ],
                |e| matches!(e, DiffError::BadHardlink { .. }),
            ),
            (
                vec![listed(
                    "h",
                    EntryKind::Hardlink {
                        target: PathBuf::from("h"),
                    },
                )],
                |e| matches!(e, DiffError::BadHardlink { .. }),
            ),
        ];
        for (entries, expected) in cases {
            let target = tempfile::tempdir_in(dir.path()).unwrap();
            match unpack_file_list_layer(entries.clone(), None, target.path()) {
                Err(LayerError::Diff(error)) if expected(&error) => {}
                other => panic!("{entries:?}: {other:?}"),
            }
            assert_eq!(
                fs::read_dir(target.path()).unwrap().count(),
                0,
                "nothing written"
            );
        }
    }

    #[test]
    fn unpacking_as_written_reports_the_cause_of_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        tree(&source);
        fs::write(source.join("etc/big"), vec![3u8; 9 * UNPACK_PIECE]).unwrap();
        // The target cannot be written: the unpacker's error, not the tee's broken pipe.
        let error = unpack_file_list_layer(file_list(&source), None, &dir.path().join("missing"))
            .unwrap_err();
        assert!(matches!(error, LayerError::Unpack(_)), "{error:?}");
        // A source vanishes: the reader's error, not the unpacker's truncated tar.
        let mut entries = file_list(&source);
        fs::remove_file(source.join("etc/big")).unwrap();
        entries.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));
        let target = tempfile::tempdir_in(dir.path()).unwrap();
        let error = unpack_file_list_layer(entries, None, target.path()).unwrap_err();
        assert!(matches!(error, LayerError::Diff(_)), "{error:?}");
    }

    #[test]
    fn gzip_header_has_no_name_and_no_time() {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::open_or_create(dir.path()).unwrap();
        let blob = write_layer(&layout, Compression::Gzip, None, |_| Ok(())).unwrap();
        let bytes = fs::read(layout.blob_path(blob.descriptor.digest()).unwrap()).unwrap();
        assert_eq!(&bytes[..4], &[0x1f, 0x8b, 8, 0], "no FNAME flag");
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "mtime 0");
        assert_eq!(bytes[9], 255, "OS unknown");
    }

    #[test]
    fn layer_round_trips_through_apply() {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::open_or_create(dir.path().join("store")).unwrap();
        let source = dir.path().join("src");
        tree(&source);
        let blob =
            write_tree_layer(&layout, &source, TreeKind::RootFs, Compression::Zstd, None).unwrap();
        let target = dir.path().join("out");
        fs::create_dir(&target).unwrap();
        let file = layout.open_blob(blob.descriptor.digest()).unwrap();
        let mut stream = DigestingReader::new(decompressed(file).unwrap());
        apply_layer(
            &mut stream,
            &target,
            &ApplyOptions::for_current_user(WhiteoutMode::Merge),
        )
        .unwrap();
        assert_eq!(stream.finish().unwrap().0, blob.diff_id);
        assert_eq!(
            fs::read(target.join("etc/ssl/cert")).unwrap(),
            vec![7u8; 100_000]
        );
        assert_eq!(
            fs::read_link(target.join("etc/hosts.link")).unwrap(),
            Path::new("hosts")
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            fs::metadata(target.join("hard")).unwrap().ino(),
            fs::metadata(target.join("etc/hosts")).unwrap().ino()
        );
    }
}
