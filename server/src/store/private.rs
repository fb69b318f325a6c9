//! Owner-only data. The data dir holds the signing key, the API key and
//! the SQLite file with stream keys and token records, so the dir is 0700
//! and the database (with its `-wal` and `-shm`) 0600, like the key files.
//! A dir or database left wider by an older version or by hand is
//! tightened at start, with a warning in the log.

use std::path::Path;

/// Create `dir` (and missing parents) owner-only, or tighten an existing
/// `dir` that group or others may use. Failing to tighten (a dir owned by
/// someone else) is logged, not fatal: the files in it are still private.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
                        Ok(()) => tracing::warn!(
                            path = %dir.display(),
                            was = format!("{mode:o}"),
                            "the data dir was open to other users; made it owner-only (700)"
                        ),
                        Err(e) => tracing::warn!(
                            path = %dir.display(),
                            mode = format!("{mode:o}"),
                            error = %e,
                            "the data dir is open to other users and cannot be made owner-only"
                        ),
                    }
                }
                Ok(())
            }
            Ok(_) => Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists and is not a directory")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
            }
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Make the SQLite file `db` exist as 0600 before SQLite opens it (SQLite
/// creates `-wal` and `-shm` with the mode of the database), and tighten
/// an existing database and its `-wal` / `-shm`.
pub fn private_db_file(db: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        // create_new: never truncate, and do not race another opener into a wider mode.
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(db) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            let path = Path::new(&name);
            let Ok(meta) = std::fs::metadata(path) else { continue };
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                tracing::warn!(path = %path.display(), was = format!("{mode:o}"), "made the database owner-only (600)");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = db;
    Ok(())
}
