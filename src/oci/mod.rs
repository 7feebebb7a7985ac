//! Glue over [`oci_spec`]: digests, media types, and the OCI image layout on disk.
//!
//! Owns no network and no root filesystems. Image configs, manifests and indexes are the
//! `oci_spec::image` types; this module adds what they lack: computing digests, and reading
//! and writing an [OCI image layout](https://github.com/opencontainers/image-spec/blob/main/image-layout.md)
//! with atomic writes.

pub mod annotation;
pub mod digest;
pub mod image;
pub mod layout;
pub mod limits;
pub mod reference;
pub mod referrers;
pub mod state;

pub use digest::{Digester, sha256_digest};
pub use image::{ImageError, ResolvedImage};
pub use layout::{BlobWriter, ImageLayout, LayoutError, REF_NAME_ANNOTATION};
pub use oci_spec::image::{
    Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest, MediaType,
};
pub use state::{ImageLayer, ImageState, NoBlob};
