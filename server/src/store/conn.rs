//! A connection of its own to the server's SQLite file, for modules (chat
//! rooms, channels) that keep a table outside the [`Store`](super::Store)
//! trait so the shared store does not need to know about them.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use super::StoreError;

/// How long a statement waits for another connection's write lock before
/// failing: the modules share one file, so brief contention is normal.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Open `path` (owner-only, see [`super::private_db_file`]) and create
/// `schema` (idempotent `CREATE TABLE IF NOT EXISTS` statements) in it.
pub fn open_connection(path: &Path, schema: &str) -> Result<Connection, StoreError> {
    super::private_db_file(path)
        .map_err(|source| StoreError::Private { path: path.display().to_string(), source })?;
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(schema)?;
    Ok(conn)
}

/// A [`Connection`] behind a mutex, shared by the handlers of one module.
pub struct TableConnection {
    conn: Mutex<Connection>,
}

impl TableConnection {
    /// [`open_connection`], behind a mutex.
    pub fn open(path: &Path, schema: &str) -> Result<Self, StoreError> {
        Ok(Self { conn: Mutex::new(open_connection(path, schema)?) })
    }

    /// The connection, for one statement or transaction.
    pub fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }
}
