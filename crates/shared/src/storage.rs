//! The storage port for uploaded files (logos, documents) and its local-directory adapter.
//!
//! Names are chosen by the platform (never taken from an upload) and are checked again here:
//! one path segment of ASCII letters, digits, `-`, `_` and `.`, not starting with a dot.

use async_trait::async_trait;

/// Where uploads live.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` under `name` (replacing nothing: names are unique).
    ///
    /// # Errors
    /// A bad name or a storage failure.
    async fn put(&self, name: &str, bytes: &[u8]) -> anyhow::Result<()>;
    /// The bytes stored under `name`, if any.
    ///
    /// # Errors
    /// A bad name or a storage failure.
    async fn get(&self, name: &str) -> anyhow::Result<Option<Vec<u8>>>;
    /// Removes `name` (absent is fine).
    ///
    /// # Errors
    /// A bad name or a storage failure.
    async fn delete(&self, name: &str) -> anyhow::Result<()>;
}

/// Whether `name` is a safe single path segment.
#[must_use]
pub fn is_safe_name(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[cfg(feature = "infra")]
pub use local::LocalDir;

#[cfg(feature = "infra")]
mod local {
    use std::path::{Path, PathBuf};

    use anyhow::Context as _;
    use async_trait::async_trait;

    use super::{BlobStore, is_safe_name};

    /// Files in one directory (created on first write). A write goes to a temporary name
    /// first and is renamed into place, so a reader never sees half a file.
    #[derive(Clone, Debug)]
    pub struct LocalDir {
        root: PathBuf,
    }

    impl LocalDir {
        /// Files under `root`.
        #[must_use]
        pub fn new(root: impl Into<PathBuf>) -> Self {
            Self { root: root.into() }
        }

        fn path(&self, name: &str) -> anyhow::Result<PathBuf> {
            anyhow::ensure!(is_safe_name(name), "refusing the storage name {name:?}");
            Ok(self.root.join(name))
        }
    }

    #[async_trait]
    impl BlobStore for LocalDir {
        async fn put(&self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
            let path = self.path(name)?;
            tokio::fs::create_dir_all(&self.root)
                .await
                .with_context(|| format!("creating {}", self.root.display()))?;
            let partial = self.root.join(format!(".{name}.partial"));
            tokio::fs::write(&partial, bytes)
                .await
                .with_context(|| format!("writing {}", partial.display()))?;
            tokio::fs::rename(&partial, &path)
                .await
                .with_context(|| format!("renaming into {}", path.display()))
        }

        async fn get(&self, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
            let path = self.path(name)?;
            match tokio::fs::read(&path).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
            }
        }

        async fn delete(&self, name: &str) -> anyhow::Result<()> {
            let path = self.path(name)?;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => Ok(()),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(err) => {
                    Err(err).with_context(|| format!("removing {}", Path::new(&path).display()))
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[tokio::test]
        async fn files_round_trip_and_unsafe_names_are_refused() {
            let dir = std::env::temp_dir().join(format!("maas-blobs-{}", uuid::Uuid::now_v7()));
            let store = LocalDir::new(&dir);
            store.put("a.png", b"x").await.unwrap();
            assert_eq!(
                store.get("a.png").await.unwrap().as_deref(),
                Some(&b"x"[..])
            );
            store.delete("a.png").await.unwrap();
            assert_eq!(store.get("a.png").await.unwrap(), None);
            for bad in ["../x", "a/b", ".hidden", ""] {
                assert!(store.put(bad, b"x").await.is_err(), "{bad}");
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
