//! Where recordings are kept: objects by key, behind [`RecordingStore`], so
//! an S3-compatible store can replace the directory ([`DirStore`]).
//!
//! Keys are `/`-separated relative paths of `[A-Za-z0-9._-]` segments (no
//! empty, `.` or `..` segment); anything else is refused, so a key can never
//! name a file outside the store.

use std::io;
use std::path::{Path, PathBuf};

/// Objects by key. Calls block (file or network I/O): run them off the
/// async runtime.
pub trait RecordingStore: Send + Sync + 'static {
    /// Write `data` at `key`, replacing what was there; readers see the old
    /// or the new object, never a part.
    fn put(&self, key: &str, data: &[u8]) -> io::Result<()>;
    /// The object at `key`, `None` if there is none.
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>>;
    /// Every key that starts with `prefix`, sorted.
    fn list(&self, prefix: &str) -> io::Result<Vec<String>>;
    /// Remove `key` (nothing if it is not there).
    fn delete(&self, key: &str) -> io::Result<()>;

    /// Remove every key under `prefix`; how many were removed.
    fn delete_prefix(&self, prefix: &str) -> io::Result<usize> {
        let keys = self.list(prefix)?;
        for key in &keys {
            self.delete(key)?;
        }
        Ok(keys.len())
    }
}

/// Whether `key` is a valid object key.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|s| {
            !s.is_empty() && s != "." && s != ".." && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

fn bad_key() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not a valid recording object key")
}

/// Objects as files under a directory (`<data-dir>/recordings`).
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        if !valid_key(key) {
            return Err(bad_key());
        }
        Ok(self.root.join(key))
    }

    fn walk(&self, dir: &Path, rel: &str, out: &mut Vec<String>) -> io::Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if name.starts_with(".tmp-") {
                continue;
            }
            let key = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            if entry.file_type()?.is_dir() {
                self.walk(&entry.path(), &key, out)?;
            } else {
                out.push(key);
            }
        }
        Ok(())
    }
}

impl RecordingStore for DirStore {
    fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let path = self.path(key)?;
        let dir = path.parent().ok_or_else(bad_key)?;
        std::fs::create_dir_all(dir)?;
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(bad_key)?;
        let tmp = dir.join(format!(".tmp-{name}"));
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, &path)
    }

    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(key)?) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::IsADirectory => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        // Walk the deepest directory the prefix names, then filter.
        let dir_part = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        if !dir_part.is_empty() && !valid_key(dir_part) {
            return Err(bad_key());
        }
        let mut out = Vec::new();
        self.walk(&self.root.join(dir_part), dir_part, &mut out)?;
        out.retain(|k| k.starts_with(prefix));
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        // Empty directories left behind go too (up to the root).
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| *d != self.root && d.starts_with(&self.root)) {
            if std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}
