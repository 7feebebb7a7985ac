//! Blob endpoints: `HEAD` a blob, fetch one into the store (streamed, verified, never past
//! its declared size, restarted when cut short), push one (exists, cross-repository mount,
//! or a monolithic or chunked upload streamed from the file), and mount one.
//!
//! Must not: hold a blob whole in memory, write past its declared size, or name
//! [`super::manifests`] (documents read into memory are there).

use oci_spec::image::{Descriptor, Digest};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, Response, StatusCode, Url};

use super::bounds::Bound;
use super::client::backoff;
use super::error::{RegistryError, check_status};
use super::progress::Progress;
use super::transport::{BlobPush, Payload, Registry, Scope, header_str};
use crate::oci::{ImageLayout, LayoutError};

impl Registry {
    /// Whether a blob exists in the repository (`HEAD`).
    ///
    /// # Errors
    /// Transport or auth failures.
    pub async fn has_blob(
        &self,
        repository: &str,
        digest: &Digest,
        scope: &Scope,
    ) -> Result<bool, RegistryError> {
        let url = self.blob_url(repository, digest);
        self.exists(url, HeaderMap::new(), scope).await
    }

    /// Where the blob `digest` of `repository` is.
    fn blob_url(&self, repository: &str, digest: &Digest) -> Url {
        self.url(&format!("v2/{repository}/blobs/{digest}"))
    }

    /// The response to a GET of a blob, its status checked: not found, or a success.
    ///
    /// # Errors
    /// Not found, transport failures, another status.
    pub(super) async fn get_blob(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<Response, RegistryError> {
        let url = self.blob_url(repository, digest);
        let response = self
            .send(
                Method::GET,
                url.clone(),
                HeaderMap::new(),
                Payload::Empty,
                &Scope::pull(repository),
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                what: "blob",
                name: format!("{}/{repository}@{digest}", self.name),
            });
        }
        check_status(Method::GET, &url, response).await
    }

    /// Streams a blob into the layout, verifying digest and size as it arrives. No more than
    /// its declared size is read or written: a `Content-Length` other than that size is
    /// refused before reading, and one byte more is an error (neither is retried). A body
    /// cut short is fetched again from the start; a mismatch is an error and nothing is
    /// kept.
    ///
    /// # Errors
    /// Not found, transport failures after retries, digest or size mismatch.
    pub async fn fetch_blob(
        &self,
        repository: &str,
        descriptor: &Descriptor,
        layout: &ImageLayout,
        progress: &dyn Progress,
    ) -> Result<(), RegistryError> {
        let digest = descriptor.digest();
        let url = self.blob_url(repository, digest);
        let bound = Bound::exactly(descriptor.size());
        let size_error = |problem| RegistryError::Size {
            what: "blob",
            source_name: format!("{}/{repository}@{digest}", self.name),
            problem,
        };
        let max = self.options.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            progress.reset(digest);
            let mut response = self.get_blob(repository, digest).await?;
            bound
                .check_length(response.content_length())
                .map_err(size_error)?;
            let mut writer = layout.blob_writer()?;
            let mut write_error = None;
            let streamed = loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        // Nothing past the declared size reaches the disk: the chunk that
                        // would cross it is not written, and the unfinished temporary file
                        // goes with the writer.
                        bound
                            .check_total(writer.size() + chunk.len() as u64)
                            .map_err(size_error)?;
                        if let Err(error) = std::io::Write::write_all(&mut writer, &chunk) {
                            write_error = Some(error);
                            break Ok(());
                        }
                        progress.advance(digest, chunk.len() as u64);
                    }
                    Ok(None) => break Ok(()),
                    Err(error) => break Err(error),
                }
            };
            if let Some(source) = write_error {
                return Err(LayoutError::File {
                    action: "writing a blob in",
                    path: layout.tmp_dir(),
                    source,
                }
                .into());
            }
            match streamed {
                Ok(()) => {
                    return match writer.commit(Some((digest, descriptor.size()))) {
                        Ok(_) => {
                            super::source::record(layout, digest, &self.name, repository);
                            Ok(())
                        }
                        Err(LayoutError::DigestMismatch {
                            expected,
                            expected_size,
                            actual,
                            actual_size,
                        }) => Err(RegistryError::DigestMismatch {
                            what: "blob",
                            source_name: format!("{}/{repository}", self.name),
                            expected,
                            expected_size,
                            actual,
                            actual_size,
                        }),
                        Err(error) => Err(error.into()),
                    };
                }
                // The body was cut short: the uncommitted writer removes its temporary
                // file; fetch again from the start.
                Err(_) if attempt < max => {
                    drop(writer);
                    tokio::time::sleep(backoff(self.options.backoff, attempt)).await;
                }
                Err(source) => {
                    return Err(RegistryError::Connection {
                        url: url.to_string(),
                        attempts: attempt,
                        source: source.without_url(),
                    });
                }
            }
        }
    }

    /// Pushes one blob from the layout: nothing if the repository has it (`HEAD`), a
    /// cross-repository mount when `mount_from` (a repository of this registry) is given,
    /// else an upload: monolithic up to the chunk size, chunked above it. A failed upload
    /// is restarted from the beginning with a new upload session.
    ///
    /// # Errors
    /// Missing local blob, transport or auth failures after retries, a rejected upload.
    pub async fn push_blob(
        &self,
        repository: &str,
        descriptor: &Descriptor,
        layout: &ImageLayout,
        mount_from: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<BlobPush, RegistryError> {
        let digest = descriptor.digest();
        let scope = match mount_from {
            Some(from) => Scope::mount(repository, from),
            None => Scope::push(repository),
        };
        if self.has_blob(repository, digest, &scope).await? {
            return Ok(BlobPush::Exists);
        }
        let max = self.options.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .try_push_blob(repository, descriptor, layout, mount_from, &scope, progress)
                .await;
            match result {
                Ok(outcome) => return Ok(outcome),
                Err(error @ (RegistryError::Layout(_) | RegistryError::Unauthorized { .. })) => {
                    return Err(error);
                }
                Err(_) if attempt < max => {
                    progress.reset(digest);
                    tokio::time::sleep(backoff(self.options.backoff, attempt)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn try_push_blob(
        &self,
        repository: &str,
        descriptor: &Descriptor,
        layout: &ImageLayout,
        mount_from: Option<&str>,
        scope: &Scope,
        progress: &dyn Progress,
    ) -> Result<BlobPush, RegistryError> {
        let digest = descriptor.digest();
        let mut start = self.url(&format!("v2/{repository}/blobs/uploads/"));
        if let Some(from) = mount_from.filter(|from| *from != repository) {
            start
                .query_pairs_mut()
                .append_pair("mount", digest.as_ref())
                .append_pair("from", from);
        }
        let response = self
            .send(
                Method::POST,
                start.clone(),
                HeaderMap::new(),
                Payload::Empty,
                scope,
            )
            .await?;
        // 201: mounted. 202: an upload session (also the answer to a mount the registry
        // declined, which oci-client reports as an error; we upload into that session).
        let response = check_status(Method::POST, &start, response).await?;
        if response.status() == StatusCode::CREATED {
            progress.advance(digest, descriptor.size());
            return Ok(BlobPush::Mounted);
        }
        let mut location = self.location(&response)?;
        if !layout.has_blob(digest) {
            // The mount was declined and the blob was never downloaded: fetch it from where
            // it lives, then upload it.
            if let Some(from) = mount_from.filter(|from| *from != repository) {
                self.fetch_blob(from, descriptor, layout, progress).await?;
                progress.reset(digest);
            }
        }
        // The upload streams from the file, a range per request: a blob (or a chunk of
        // one) is never whole in memory. Checked here so that a missing or short blob is
        // an error of the store, not a failed request retried.
        let path = layout.blob_path(digest)?;
        let size = descriptor.size();
        let on_disk = layout
            .open_blob(digest)?
            .metadata()
            .map_err(|source| LayoutError::File {
                action: "inspecting",
                path: path.clone(),
                source,
            })?
            .len();
        if on_disk != size {
            return Err(LayoutError::File {
                action: "reading",
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the blob is {on_disk} bytes, its descriptor says {size}"),
                ),
            }
            .into());
        }
        let chunk_size = self.options.chunk_size.max(1);
        let mut octet = HeaderMap::new();
        octet.insert(
            CONTENT_TYPE,
            "application/octet-stream"
                .parse()
                .expect("a valid header value"),
        );
        if size > chunk_size {
            let mut offset = 0;
            while offset < size {
                let len = chunk_size.min(size - offset);
                let mut headers = octet.clone();
                headers.insert(
                    "content-range",
                    format!("{offset}-{}", offset + len - 1)
                        .parse()
                        .expect("a valid header value"),
                );
                let response = self
                    .send(
                        Method::PATCH,
                        location.clone(),
                        headers,
                        Payload::File {
                            path: &path,
                            offset,
                            len,
                        },
                        scope,
                    )
                    .await?;
                let response = check_status(Method::PATCH, &location, response).await?;
                location = self.location(&response)?;
                offset += len;
                progress.advance(digest, len);
            }
            let mut put = location.clone();
            put.query_pairs_mut().append_pair("digest", digest.as_ref());
            let response = self
                .send(Method::PUT, put.clone(), octet, Payload::Empty, scope)
                .await?;
            check_status(Method::PUT, &put, response).await?;
        } else {
            let mut put = location.clone();
            put.query_pairs_mut().append_pair("digest", digest.as_ref());
            let body = Payload::File {
                path: &path,
                offset: 0,
                len: size,
            };
            let response = self
                .send(Method::PUT, put.clone(), octet, body, scope)
                .await?;
            check_status(Method::PUT, &put, response).await?;
            progress.advance(digest, size);
        }
        Ok(BlobPush::Uploaded)
    }

    /// Asks the registry to mount a blob from another repository of it. `true`: mounted;
    /// `false`: declined (the registry answered `202` with an upload session instead,
    /// which oci-client would report as an error; the session is left to expire).
    ///
    /// # Errors
    /// Transport or auth failures.
    pub async fn mount_blob(
        &self,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<bool, RegistryError> {
        let mut url = self.url(&format!("v2/{repository}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", digest.as_ref())
            .append_pair("from", from);
        let response = self
            .send(
                Method::POST,
                url.clone(),
                HeaderMap::new(),
                Payload::Empty,
                &Scope::mount(repository, from),
            )
            .await?;
        let response = check_status(Method::POST, &url, response).await?;
        Ok(response.status() == StatusCode::CREATED)
    }

    /// The upload session URL of an answer (`Location`, possibly relative).
    fn location(&self, response: &Response) -> Result<Url, RegistryError> {
        let location = header_str(response, "location").ok_or_else(|| RegistryError::Protocol {
            registry: self.name.clone(),
            detail: "upload answer without a Location".to_owned(),
        })?;
        response
            .url()
            .join(location)
            .map_err(|error| RegistryError::Protocol {
                registry: self.name.clone(),
                detail: format!("bad upload Location: {error}"),
            })
    }
}
