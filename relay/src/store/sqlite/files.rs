//! The database's files, and what can go wrong with them outside SQLite's view: another relay on the
//! same file (the lock), the file deleted or replaced under the running relay (its identity), a
//! shared-memory file that cannot be written (SQLite maps it into memory: a write to it would kill
//! the process with SIGBUS), corruption (the integrity check at start), and a disk too full to open
//! the database for writing (read-only connections that need no new file space).

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use rusqlite::{Connection, OpenFlags};

use super::errors::map_err;
use crate::store::{StoreError, StoreResult};

/// `<database><suffix>`, e.g. `relay.db-shm`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// One relay per database file: a second one would answer reads from its own cache after the first
/// deleted or changed the message. The lock is an exclusive advisory lock on `<database>.lock` (flock
/// on Unix), held by the open file, so the operating system releases it when the process ends, however
/// it ends; the file itself stays and is harmless.
pub(super) fn take_lock(path: &Path) -> StoreResult<std::fs::File> {
    let lock_path = sibling(path, ".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        // On a read-only file system an existing lock file still locks (flock needs no write access).
        .or_else(|e| std::fs::File::open(&lock_path).map_err(|_| e))
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot open {}: {e}", lock_path.display()))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
            "another relay is using {} (it holds {}): stop it, or give this one its own --store path",
            path.display(),
            lock_path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Unavailable(format!(
            "cannot lock {}: {e}",
            lock_path.display()
        ))),
    }
}

/// The files the store must be able to trust before each group of writes and each readiness check:
/// the database is still the file that was opened (device and inode, Unix: SQLite keeps writing to
/// an open file that was deleted or renamed over, and those writes are gone at the next start), and
/// its shared-memory file can still be written.
#[derive(Debug, Clone)]
pub(super) struct FileIdentity {
    path: PathBuf,
    shm: PathBuf,
    #[cfg(unix)]
    id: (u64, u64),
}

impl FileIdentity {
    pub(super) fn of(path: &Path) -> StoreResult<Self> {
        let metadata = std::fs::metadata(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot stat {}: {e}", path.display())))?;
        #[cfg(not(unix))]
        let _ = metadata;
        Ok(Self {
            path: path.to_owned(),
            shm: sibling(path, "-shm"),
            #[cfg(unix)]
            id: {
                use std::os::unix::fs::MetadataExt;
                (metadata.dev(), metadata.ino())
            },
        })
    }

    /// `Unavailable` when the path no longer names the file that is open, or the shared-memory file
    /// cannot be written.
    pub(super) fn check(&self) -> StoreResult<()> {
        self.check_shm()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let path = self.path.display();
            match std::fs::metadata(&self.path) {
                Ok(now) if (now.dev(), now.ino()) == self.id => Ok(()),
                Ok(_) => Err(StoreError::Unavailable(format!(
                    "{path} was replaced by another file while the relay had it open: writes refused; \
                     restart the relay to open the new file"
                ))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(StoreError::Unavailable(format!(
                        "{path} was deleted while the relay had it open: writes refused (they would be lost); \
                     restore the file from a backup, or restart to begin with an empty store"
                    )))
                }
                Err(e) => Err(StoreError::Unavailable(format!("cannot stat {path}: {e}"))),
            }
        }
        #[cfg(not(unix))]
        Ok(())
    }

    /// SQLite maps `<database>-shm` into memory and writes to it on every commit (and on some reads);
    /// if the file became unwritable (`chattr +i`, a permission change), that write is a SIGBUS that
    /// kills the process. Opening it for writing first turns that into an error. A file that does
    /// not exist yet is fine: SQLite creates it.
    pub(super) fn check_shm(&self) -> StoreResult<()> {
        match std::fs::OpenOptions::new().write(true).open(&self.shm) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Unavailable(format!(
                "{} cannot be written ({e}): SQLite maps it into memory, and writing to it would crash \
                 the relay, so the store refuses work. Make it writable again (`lsattr` shows an \
                 immutable flag, `chattr -i` clears it; check its owner and mode)",
                self.shm.display()
            ))),
        }
    }
}

/// How thoroughly the database is checked for corruption at start (`--integrity-check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum IntegrityCheck {
    /// `PRAGMA quick_check`: every page and record, without cross-checking indexes (seconds per GB).
    #[default]
    Quick,
    /// `PRAGMA integrity_check`: also every index against its table (slower).
    Full,
    /// No check: a corrupt page is found when it is read (503), and readiness fails from then on.
    Off,
}

/// Refuse to serve a corrupt file (`Corrupt` with what the check found; the store names the file).
pub(super) fn check_integrity(conn: &Connection, check: IntegrityCheck) -> StoreResult<()> {
    let pragma = match check {
        IntegrityCheck::Quick => "PRAGMA quick_check(5)",
        IntegrityCheck::Full => "PRAGMA integrity_check(5)",
        IntegrityCheck::Off => return Ok(()),
    };
    let findings: Vec<String> = conn
        .prepare(pragma)
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(map_err)?;
    if findings.len() == 1 && findings[0] == "ok" {
        return Ok(());
    }
    Err(StoreError::Corrupt(findings.join("; ")))
}

/// The error for a corrupt database file: what was found, and the recovery.
pub(super) fn corrupt(path: &Path, found: &str) -> StoreError {
    let path = path.display();
    StoreError::Corrupt(format!(
        "{path} is corrupt ({found}). The relay will not serve or write it. Restore it from a backup, \
         or salvage what is readable: `sqlite3 {path} .recover | sqlite3 recovered.db`, then start \
         with --store sqlite:recovered.db"
    ))
}

/// A read-only connection. `immutable`: read the database file alone, without the shared-memory
/// file or locks, for when there is no room to create them (only correct while no write-ahead log
/// holds committed data, see [`wal_is_empty`], and no one writes).
pub(super) fn open_reader(path: &Path, immutable: bool) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if immutable {
        Connection::open_with_flags(
            format!("file:{}?immutable=1", uri_path(path)),
            flags | OpenFlags::SQLITE_OPEN_URI,
        )
    } else {
        Connection::open_with_flags(path, flags)
    }
    .map_err(map_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(map_err)?;
    Ok(conn)
}

/// Whether the write-ahead log is absent or empty, so the database file alone holds every committed
/// write (true after a clean stop, which checkpoints and removes it).
pub(super) fn wal_is_empty(path: &Path) -> bool {
    std::fs::metadata(sibling(path, "-wal")).map_or(true, |m| m.len() == 0)
}

/// A path as the path part of an SQLite `file:` URI: `%`, `?` and `#` escaped.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_paths_escape_what_a_uri_would_read_as_syntax() {
        assert_eq!(
            uri_path(Path::new("/data/a%b?c#d.db")),
            "/data/a%25b%3fc%23d.db"
        );
        assert_eq!(uri_path(Path::new("relay.db")), "relay.db");
    }
}
