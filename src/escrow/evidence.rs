//! The content-addressed evidence store: each upload is kept once under its SHA-256
//! (`<dir>/<first two hex digits>/<digest>`), written to a temporary file and renamed into
//! place, so a reader never sees half a file and the same bytes uploaded twice are stored once.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct EvidenceStore {
    dir: PathBuf,
    pub max_bytes: usize,
    pub content_types: Vec<String>,
    /// Files one deal may carry.
    pub max_per_deal: usize,
}

impl EvidenceStore {
    pub fn new(
        dir: PathBuf,
        max_bytes: usize,
        content_types: Vec<String>,
        max_per_deal: usize,
    ) -> Self {
        Self {
            dir,
            max_bytes,
            max_per_deal,
            content_types,
        }
    }

    fn path_of(&self, sha256: &str) -> PathBuf {
        self.dir.join(&sha256[..2]).join(sha256)
    }

    /// Stores `bytes`; returns their hex SHA-256.
    pub async fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        let digest = hex::encode(Sha256::digest(bytes));
        let path = self.path_of(&digest);
        if tokio::fs::try_exists(&path).await? {
            return Ok(digest);
        }
        let parent = path.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(parent).await?;
        let tmp = parent.join(format!(".{digest}.{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, &path).await?;
        Ok(digest)
    }

    /// The bytes stored under `sha256`, if any.
    pub async fn get(&self, sha256: &str) -> std::io::Result<Option<Vec<u8>>> {
        if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(None);
        }
        match tokio::fs::read(self.path_of(sha256)).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}
