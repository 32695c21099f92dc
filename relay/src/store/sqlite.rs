//! The embedded, durable store: SQLite (bundled) in WAL mode with `synchronous=FULL`.
//!
//! Writes go through one writer thread that groups whatever writes are waiting into a single transaction
//! ("group commit"): one fsync acknowledges many requests, and a write's future resolves only after its
//! transaction has committed, so a 201 always means the data is on disk. Each write runs in its own
//! savepoint, so one failing write (say, a precondition) never rolls back its neighbours.
//! Reads use a small pool of read-only connections on the blocking thread pool; WAL lets them run
//! alongside the writer.
//!
//! Must never: hold a connection across an `.await`, or acknowledge a write before its commit returned.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Backend, Created, Store, StoreError, StoreResult};
use crate::domain::{
    IdempotencyKey, LogCursor, LogPage, Message, MessageBody, MessageId, MessageUpdate, PageLimit,
    Revision, SavedValue,
};

/// The most writes grouped into one transaction.
const MAX_GROUP: usize = 256;
/// Read connections kept open.
const READERS: usize = 4;
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id          BLOB PRIMARY KEY,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,   -- unix microseconds
    updated_at  INTEGER NOT NULL,
    expires_at  INTEGER,            -- unix microseconds; NULL = never
    revision    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS idempotency (
    key         TEXT PRIMARY KEY,
    message_id  BLOB NOT NULL,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    forget_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS app_log (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    name        TEXT PRIMARY KEY,
    value       INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO counters(name, value) VALUES ('messages', 0), ('app_log', 0);
";

pub struct SqliteStore {
    path: PathBuf,
    /// `<database>.lock`, locked exclusively for as long as this store lives ([`take_lock`]).
    _lock: std::fs::File,
    /// The file opened, to notice it deleted or replaced under the running relay ([`FileIdentity`]).
    identity: FileIdentity,
    writer: mpsc::Sender<Command>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    read_permits: Semaphore,
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`, with its parent directories.
    pub fn open(path: &Path) -> StoreResult<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let lock = take_lock(path)?;
        let conn = Connection::open(path).map_err(map_err)?;
        let identity = FileIdentity::of(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(map_err)?;
        migrate(&conn)?;

        let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
        let writer_thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn({
                let identity = identity.clone();
                move || run_writer(conn, rx, identity)
            })
            .map_err(|e| StoreError::Internal(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            path: path.to_owned(),
            _lock: lock,
            identity,
            writer: tx,
            writer_thread: Mutex::new(Some(writer_thread)),
            readers: Mutex::new(Vec::new()),
            read_permits: Semaphore::new(READERS),
        })
    }

    /// Run `f` inside the next group-commit transaction; resolve once that transaction has committed.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job = Box::new(TypedJob { f, reply });
        self.writer
            .send(Command::Write(job))
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        result
            .await
            .map_err(|_| StoreError::Unavailable("the writer stopped".into()))?
    }

    /// Run `f` on a pooled read connection on the blocking thread pool.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let _permit = self
            .read_permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        let pooled = self.readers.lock().ok().and_then(|mut pool| pool.pop());
        let conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = f(&conn);
            (conn, result)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?;
        if let Ok(mut pool) = self.readers.lock() {
            pool.push(conn);
        }
        result
    }
}

/// One relay per database file: a second one would answer reads from its own cache after the first
/// deleted or changed the message. The lock is an exclusive advisory lock on `<database>.lock` (flock
/// on Unix), held by the open file, so the operating system releases it when the process ends, however
/// it ends; the file itself stays and is harmless.
fn take_lock(path: &Path) -> StoreResult<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
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

/// Which file the store opened: its device and inode (Unix), compared with what the path names now.
/// SQLite keeps writing to an open file that was deleted (or renamed over), and those writes are gone
/// at the next start.
#[derive(Debug, Clone)]
struct FileIdentity {
    path: PathBuf,
    #[cfg(unix)]
    id: (u64, u64),
}

impl FileIdentity {
    fn of(path: &Path) -> StoreResult<Self> {
        let metadata = std::fs::metadata(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot stat {}: {e}", path.display())))?;
        #[cfg(not(unix))]
        let _ = metadata;
        Ok(Self {
            path: path.to_owned(),
            #[cfg(unix)]
            id: {
                use std::os::unix::fs::MetadataExt;
                (metadata.dev(), metadata.ino())
            },
        })
    }

    /// `Unavailable` when the path no longer names the file that is open.
    fn check(&self) -> StoreResult<()> {
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
}

fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(map_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(map_err)?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> StoreResult<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(map_err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Internal(format!(
            "the database has schema version {version}; this relay knows up to {SCHEMA_VERSION}"
        )));
    }
    conn.execute_batch(SCHEMA).map_err(map_err)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(map_err)
}

// ---- the writer thread ----------------------------------------------------------------------------

enum Command {
    Write(Box<dyn WriteJob>),
    Close(oneshot::Sender<()>),
}

/// A write waiting for the next transaction. `run` executes it inside that transaction and hands back
/// a `Reply`, called with the transaction's outcome once it is known.
trait WriteJob: Send {
    fn run(self: Box<Self>, conn: &Connection) -> (bool, Reply);
    fn fail(self: Box<Self>, error: StoreError);
    /// The caller stopped waiting (its request timed out and was answered 503): the job must not run,
    /// or a write the client was told failed would be stored.
    fn caller_gone(&self) -> bool;
}

type Reply = Box<dyn FnOnce(StoreResult<()>) + Send>;

struct TypedJob<T, F> {
    f: F,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> WriteJob for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<T> + Send,
{
    fn run(self: Box<Self>, conn: &Connection) -> (bool, Reply) {
        let TypedJob { f, reply } = *self;
        let result = f(conn);
        let ok = result.is_ok();
        let reply: Reply = Box::new(move |outcome: StoreResult<()>| {
            // A result the caller can act on only once the transaction holding it has committed.
            let _ = reply.send(outcome.and(result));
        });
        (ok, reply)
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }

    fn caller_gone(&self) -> bool {
        self.reply.is_closed()
    }
}

fn run_writer(mut conn: Connection, mut rx: mpsc::Receiver<Command>, identity: FileIdentity) {
    let mut closing = None;
    while closing.is_none() {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut batch = Vec::new();
        match first {
            Command::Write(job) => batch.push(job),
            Command::Close(ack) => closing = Some(ack),
        }
        while closing.is_none() && batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Command::Write(job)) => batch.push(job),
                Ok(Command::Close(ack)) => closing = Some(ack),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            // One stat per group: a write to a file deleted or replaced under us would be lost.
            match identity.check() {
                Ok(()) => commit_group(&mut conn, batch),
                Err(error) => {
                    for job in batch {
                        job.fail(clone_error(&error));
                    }
                }
            }
        }
    }
    // Anything sent after a close is refused: dropping the receiver fails those senders.
    drop(rx);
    if let Some(ack) = closing {
        let _ = ack.send(());
    }
}

fn commit_group(conn: &mut Connection, batch: Vec<Box<dyn WriteJob>>) {
    // Jobs whose callers gave up while queued (behind a lock, a slow disk) are dropped unrun; what is
    // left of the window is the group's own transaction, a few milliseconds.
    let batch: Vec<_> = batch.into_iter().filter(|job| !job.caller_gone()).collect();
    if batch.is_empty() {
        return;
    }
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let error = map_err(e);
            for job in batch {
                job.fail(clone_error(&error));
            }
            return;
        }
    };
    let mut replies = Vec::with_capacity(batch.len());
    for job in batch {
        // Beginning the transaction may have waited (busy_timeout) while callers gave up.
        if job.caller_gone() {
            continue;
        }
        match tx.savepoint() {
            Ok(mut sp) => {
                let (ok, reply) = job.run(&sp);
                let kept = if ok {
                    sp.commit().map_err(map_err)
                } else {
                    sp.rollback().map_err(map_err)
                };
                replies.push((reply, kept));
            }
            Err(e) => job.fail(map_err(e)),
        }
    }
    let committed = tx.commit().map_err(map_err);
    for (reply, kept) in replies {
        let outcome = match (&committed, kept) {
            (Err(e), _) => Err(clone_error(e)),
            (Ok(()), kept) => kept,
        };
        reply(outcome);
    }
}

fn clone_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound => StoreError::NotFound,
        StoreError::PreconditionFailed => StoreError::PreconditionFailed,
        StoreError::Busy(m) => StoreError::Busy(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Internal(m) => StoreError::Internal(m.clone()),
    }
}

fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Busy(e.to_string()),
            ErrorCode::CannotOpen
            | ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::SystemIoFailure
            | ErrorCode::PermissionDenied => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Internal(e.to_string()),
        },
        _ => StoreError::Internal(e.to_string()),
    }
}

// ---- row mapping ------------------------------------------------------------------------------------

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn from_micros(us: i64) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| rusqlite::Error::IntegralValueOutOfRange(0, us))
}

fn id_bytes(id: MessageId) -> [u8; 16] {
    *id.as_uuid().as_bytes()
}

fn counter_add(conn: &Connection, name: &str, delta: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE counters SET value = value + ?2 WHERE name = ?1")?
        .execute(params![name, delta])?;
    Ok(())
}

fn counter(conn: &Connection, name: &str) -> rusqlite::Result<u64> {
    let value: i64 = conn
        .prepare_cached("SELECT value FROM counters WHERE name = ?1")?
        .query_row([name], |row| row.get(0))?;
    Ok(u64::try_from(value).unwrap_or(0))
}

/// Columns: body, created_at, updated_at, expires_at, revision.
fn message_from_row(id: MessageId, row: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    let body: String = row.get(0)?;
    let expires_at: Option<i64> = row.get(3)?;
    let revision: i64 = row.get(4)?;
    Ok(Message {
        id,
        body: MessageBody::from_stored(&body),
        created_at: from_micros(row.get(1)?)?,
        updated_at: from_micros(row.get(2)?)?,
        expires_at: expires_at.map(from_micros).transpose()?,
        revision: Revision(u64::try_from(revision).unwrap_or(0)),
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn create_message(
        &self,
        message: &Message,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<Created> {
        let message = message.clone();
        let key = idempotency.cloned();
        self.write(move |conn| {
            let created_at = micros(message.created_at);
            let expires_at = message.expires_at.map(micros);
            if let Some(key) = &key {
                let first = conn
                    .prepare_cached(
                        "SELECT message_id, body, created_at, expires_at FROM idempotency
                         WHERE key = ?1 AND forget_at > ?2",
                    )
                    .and_then(|mut stmt| {
                        stmt.query_row(params![key.as_str(), created_at], |row| {
                            let id: [u8; 16] = row.get(0)?;
                            let body: String = row.get(1)?;
                            let created: DateTime<Utc> = from_micros(row.get(2)?)?;
                            let expires: Option<i64> = row.get(3)?;
                            Ok(Message {
                                id: MessageId::from_bytes(id),
                                body: MessageBody::from_stored(&body),
                                created_at: created,
                                updated_at: created,
                                expires_at: expires.map(from_micros).transpose()?,
                                revision: Revision::FIRST,
                            })
                        })
                        .optional()
                    })
                    .map_err(map_err)?;
                if let Some(first) = first {
                    return Ok(Created::Replayed(first));
                }
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO idempotency
                     (key, message_id, body, created_at, expires_at, forget_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        key.as_str(),
                        id_bytes(message.id),
                        message.body.as_str(),
                        created_at,
                        expires_at,
                        micros(message.created_at + IdempotencyKey::RETENTION),
                    ])
                })
                .map_err(map_err)?;
            }
            conn.prepare_cached(
                "INSERT INTO messages (id, body, created_at, updated_at, expires_at, revision)
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id_bytes(message.id),
                    message.body.as_str(),
                    created_at,
                    expires_at,
                    message.revision.0 as i64,
                ])
            })
            .map_err(map_err)?;
            counter_add(conn, "messages", 1).map_err(map_err)?;
            Ok(Created::New)
        })
        .await
    }

    async fn get_message(&self, id: MessageId, now: DateTime<Utc>) -> StoreResult<Option<Message>> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT body, created_at, updated_at, expires_at, revision FROM messages
                 WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![id_bytes(id), micros(now)], |row| {
                    message_from_row(id, row)
                })
                .optional()
            })
            .map_err(map_err)
        })
        .await
    }

    async fn update_message(
        &self,
        update: &MessageUpdate,
        now: DateTime<Utc>,
    ) -> StoreResult<Message> {
        let update = update.clone();
        self.write(move |conn| {
            let current = conn
                .prepare_cached(
                    "SELECT body, created_at, updated_at, expires_at, revision FROM messages
                     WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![id_bytes(update.id), micros(now)], |row| {
                        message_from_row(update.id, row)
                    })
                    .optional()
                })
                .map_err(map_err)?
                .ok_or(StoreError::NotFound)?;
            if !update.precondition.admits(current.revision) {
                return Err(StoreError::PreconditionFailed);
            }
            let next = Message {
                body: update.body.clone(),
                updated_at: now,
                expires_at: update.ttl.map(|ttl| ttl.expiry_from(now)),
                revision: current.revision.next(),
                ..current
            };
            conn.prepare_cached(
                "UPDATE messages SET body = ?2, updated_at = ?3, expires_at = ?4, revision = ?5
                 WHERE id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id_bytes(next.id),
                    next.body.as_str(),
                    micros(next.updated_at),
                    next.expires_at.map(micros),
                    next.revision.0 as i64,
                ])
            })
            .map_err(map_err)?;
            Ok(next)
        })
        .await
    }

    async fn delete_message(&self, id: MessageId, now: DateTime<Utc>) -> StoreResult<Message> {
        self.write(move |conn| {
            let deleted = conn
                .prepare_cached(
                    "DELETE FROM messages WHERE id = ?1
                     RETURNING body, created_at, updated_at, expires_at, revision",
                )
                .and_then(|mut stmt| {
                    stmt.query_row([id_bytes(id)], |row| message_from_row(id, row))
                        .optional()
                })
                .map_err(map_err)?
                .ok_or(StoreError::NotFound)?;
            counter_add(conn, "messages", -1).map_err(map_err)?;
            // An expired message is gone for the caller: it is removed (and uncounted) all the same,
            // but the answer is 404, as for a read.
            if deleted.is_expired_at(now) {
                return Ok(None);
            }
            Ok(Some(deleted))
        })
        .await?
        .ok_or(StoreError::NotFound)
    }

    async fn count_messages(&self) -> StoreResult<u64> {
        self.read(|conn| counter(conn, "messages").map_err(map_err))
            .await
    }

    async fn sweep_expired(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |conn| {
            let removed = conn
                .prepare_cached(
                    "DELETE FROM messages WHERE id IN (
                         SELECT id FROM messages WHERE expires_at <= ?1 LIMIT ?2)",
                )
                .and_then(|mut stmt| stmt.execute(params![micros(now), limit]))
                .map_err(map_err)?;
            counter_add(conn, "messages", -(removed as i64)).map_err(map_err)?;
            conn.prepare_cached("DELETE FROM idempotency WHERE forget_at <= ?1")
                .and_then(|mut stmt| stmt.execute([micros(now)]))
                .map_err(map_err)?;
            Ok(removed as u64)
        })
        .await
    }

    async fn append_timestamp(&self, at: DateTime<Utc>) -> StoreResult<()> {
        self.write(move |conn| {
            conn.prepare_cached("INSERT INTO app_log (at) VALUES (?1)")
                .and_then(|mut stmt| stmt.execute([micros(at)]))
                .map_err(map_err)?;
            counter_add(conn, "app_log", 1).map_err(map_err)
        })
        .await
    }

    async fn list_timestamps(
        &self,
        limit: PageLimit,
        cursor: Option<LogCursor>,
    ) -> StoreResult<LogPage> {
        let upper = cursor.map_or(i64::MAX, |c| {
            i64::try_from(c.position()).unwrap_or(i64::MAX)
        });
        let limit = limit.get() as usize;
        self.read(move |conn| {
            let total = counter(conn, "app_log").map_err(map_err)?;
            let mut rows: Vec<(i64, DateTime<Utc>)> = conn
                .prepare_cached(
                    "SELECT position, at FROM app_log WHERE position < ?1
                     ORDER BY position DESC LIMIT ?2",
                )
                .and_then(|mut stmt| {
                    stmt.query_map(params![upper, limit as i64 + 1], |row| {
                        Ok((row.get(0)?, from_micros(row.get(1)?)?))
                    })?
                    .collect()
                })
                .map_err(map_err)?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            let next = rows
                .last()
                .filter(|_| more)
                .map(|(position, _)| LogCursor::new(*position as u64));
            Ok(LogPage {
                total,
                timestamps: rows.into_iter().map(|(_, at)| at).collect(),
                next,
            })
        })
        .await
    }

    async fn get_saved(&self) -> StoreResult<Option<SavedValue>> {
        self.read(|conn| {
            let value: Option<String> = conn
                .prepare_cached("SELECT value FROM settings WHERE name = 'saved'")
                .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)).optional())
                .map_err(map_err)?;
            // Written through SavedValue::parse, so within bounds; re-parse rather than trust the file.
            value
                .map(|v| SavedValue::parse(&v).map_err(|e| StoreError::Internal(e.to_string())))
                .transpose()
        })
        .await
    }

    async fn put_saved(&self, value: &SavedValue) -> StoreResult<()> {
        let value = value.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO settings (name, value) VALUES ('saved', ?1)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut stmt| stmt.execute([value.as_str()]))
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        if self.writer.is_closed() {
            return Err(StoreError::Unavailable("the writer stopped".into()));
        }
        self.identity.check()?;
        self.read(|conn| {
            conn.query_row(
                "SELECT value FROM counters WHERE name = 'messages'",
                [],
                |_| Ok(()),
            )
            .map_err(map_err)
        })
        .await
    }

    async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.writer.send(Command::Close(ack)).await.is_ok() {
            let _ = done.await;
        }
        let handle = self.writer_thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}
