//! The embedded, durable store: SQLite (bundled) in WAL mode with `synchronous=FULL`.
//!
//! Writes go through one writer thread that groups whatever writes are waiting into a single transaction
//! ("group commit"): one fsync acknowledges many requests, and a write's future resolves only after its
//! transaction has committed, so a 201 always means the data is on disk. Each write runs in its own
//! savepoint, so one failing write (say, a precondition) never rolls back its neighbours.
//! Reads use a small pool of read-only connections on the blocking thread pool; WAL lets them run
//! alongside the writer.
//!
//! Readiness means "writes succeed" ([`health`]): after a write fault it probes with a write. The
//! files around the database are watched ([`files`]): the lock, the file's identity, the
//! shared-memory file, corruption at start; a disk too full to open for writing still serves reads.
//!
//! Must never: hold a connection across an `.await`, acknowledge a write before its commit returned,
//! or write to a file found corrupt.

mod errors;
mod files;
mod health;

pub use files::IntegrityCheck;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{Semaphore, mpsc, oneshot};

use self::errors::{clone_error, map_err};
use self::files::{FileIdentity, check_integrity, open_reader, take_lock, wal_is_empty};
use self::health::{Health, Verdict};
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
    /// `<database>.lock`, locked exclusively for as long as this store lives (`files::take_lock`).
    _lock: std::fs::File,
    /// The file opened, to notice it deleted, replaced or its shared memory unwritable.
    files: FileIdentity,
    writes: Writes,
    health: Arc<Health>,
    /// Readers open the database file alone (`immutable`), when it could not be opened for writing.
    immutable: bool,
    readers: Mutex<Vec<Connection>>,
    read_permits: Semaphore,
}

/// Where writes go.
enum Writes {
    /// To the writer thread.
    Thread {
        tx: mpsc::Sender<Command>,
        thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    },
    /// Nowhere: the database could not be opened for writing at start (a full disk, a read-only file
    /// system); this says why. Reads are served.
    Refused(String),
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`, with its parent directories, after checking it
    /// as `check` says. If it cannot be opened for writing but its file holds every committed write,
    /// it is opened for reads only: reads are served, writes and readiness fail with the reason.
    pub fn open(path: &Path, check: IntegrityCheck) -> StoreResult<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let lock = take_lock(path)?;
        let health = Arc::new(Health::default());
        let (files, writes, immutable) = match open_for_writing(path, check) {
            Ok((conn, files)) => {
                let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
                let thread = std::thread::Builder::new()
                    .name("sqlite-writer".into())
                    .spawn({
                        let files = files.clone();
                        let health = health.clone();
                        move || run_writer(conn, rx, files, health)
                    })
                    .map_err(|e| {
                        StoreError::Internal(format!("cannot start the writer thread: {e}"))
                    })?;
                let thread = Mutex::new(Some(thread));
                (files, Writes::Thread { tx, thread }, false)
            }
            Err(error @ StoreError::Unavailable(_)) => {
                let (files, reason) = open_for_reading(path, check, error)?;
                (files, Writes::Refused(reason), true)
            }
            Err(error) => return Err(named(path, error)),
        };
        Ok(Self {
            path: path.to_owned(),
            _lock: lock,
            files,
            writes,
            health,
            immutable,
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
        let tx = match &self.writes {
            Writes::Thread { tx, .. } => tx,
            Writes::Refused(reason) => return Err(StoreError::Unavailable(reason.clone())),
        };
        if let Some(corrupt) = self.health.refuse_writes() {
            return Err(corrupt);
        }
        let (reply, result) = oneshot::channel();
        let job = Box::new(TypedJob { f, reply });
        tx.send(Command::Write(job))
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        result
            .await
            .map_err(|_| StoreError::Unavailable("the writer stopped".into()))?
            .map_err(|e| named(&self.path, e))
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
        // A read may write to the shared memory too (its read mark).
        self.files.check_shm()?;
        let pooled = self.readers.lock().ok().and_then(|mut pool| pool.pop());
        let conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&self.path, self.immutable)?,
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
        result.map_err(|e| {
            let e = named(&self.path, e);
            self.health.read_failed(&e);
            e
        })
    }
}

/// Name the file in a corruption error, with the way out: applied once, where SQLite's own error
/// leaves the store (open, `read`, `write`).
fn named(path: &Path, error: StoreError) -> StoreError {
    match error {
        StoreError::Corrupt(detail) => files::corrupt(path, &detail),
        error => error,
    }
}

/// The writer's connection: WAL, `synchronous=FULL`, checked, migrated.
fn open_for_writing(path: &Path, check: IntegrityCheck) -> StoreResult<(Connection, FileIdentity)> {
    let conn = Connection::open(path).map_err(map_err)?;
    let files = FileIdentity::of(path)?;
    // Before SQLite maps it: a write to an unwritable shared-memory file is a SIGBUS.
    files.check_shm()?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 5000;",
    )
    .map_err(map_err)?;
    check_integrity(&conn, check)?;
    migrate(&conn)?;
    Ok((conn, files))
}

/// After `error` prevented opening for writing: reads only, if the database file alone holds every
/// committed write and has the schema; else `error` stands.
fn open_for_reading(
    path: &Path,
    check: IntegrityCheck,
    error: StoreError,
) -> StoreResult<(FileIdentity, String)> {
    if !wal_is_empty(path) {
        return Err(error);
    }
    let Ok(conn) = open_reader(path, true) else {
        return Err(error);
    };
    check_integrity(&conn, check).map_err(|e| named(path, e))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap_or(0);
    if version != SCHEMA_VERSION {
        return Err(error);
    }
    let files = FileIdentity::of(path)?;
    let reason = format!(
        "{} could not be opened for writing ({error}): serving reads only, refusing writes. Free space \
         on its disk (or make it writable), then restart the relay",
        path.display()
    );
    Ok((files, reason))
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
    if version == SCHEMA_VERSION {
        // Nothing to write: a start on a full disk must not fail here.
        return Ok(());
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
    /// Run the job; `Ok` if its changes are to be kept, else its error (a fault or a refusal).
    fn run(self: Box<Self>, conn: &Connection) -> (Result<(), StoreError>, Reply);
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
    fn run(self: Box<Self>, conn: &Connection) -> (Result<(), StoreError>, Reply) {
        let TypedJob { f, reply } = *self;
        let result = f(conn);
        let ok = match &result {
            Ok(_) => Ok(()),
            Err(e) => Err(clone_error(e)),
        };
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

fn run_writer(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Command>,
    files: FileIdentity,
    health: Arc<Health>,
) {
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
            // One stat per group: a write to a file deleted or replaced under us would be lost, and
            // one to an unwritable shared-memory file would crash.
            let outcome = match files.check() {
                Ok(()) => commit_group(&mut conn, batch),
                Err(error) => {
                    for job in batch {
                        job.fail(clone_error(&error));
                    }
                    Some(Err(error))
                }
            };
            if let Some(outcome) = outcome {
                health.writes(outcome.as_ref().map(|_| ()));
            }
        }
    }
    // Anything sent after a close is refused: dropping the receiver fails those senders.
    drop(rx);
    if let Some(ack) = closing {
        let _ = ack.send(());
    }
}

/// Run a group of writes in one transaction and reply to each. Returns what the group says of the
/// store's health: `Ok` if it committed and no write failed with a fault, else the fault; `None` if
/// nothing ran.
fn commit_group(conn: &mut Connection, batch: Vec<Box<dyn WriteJob>>) -> Option<StoreResult<()>> {
    // Jobs whose callers gave up while queued (behind a lock, a slow disk) are dropped unrun; what is
    // left of the window is the group's own transaction, a few milliseconds.
    let batch: Vec<_> = batch.into_iter().filter(|job| !job.caller_gone()).collect();
    if batch.is_empty() {
        return None;
    }
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let error = map_err(e);
            for job in batch {
                job.fail(clone_error(&error));
            }
            return Some(Err(error));
        }
    };
    let mut fault = None;
    let mut replies = Vec::with_capacity(batch.len());
    for job in batch {
        // Beginning the transaction may have waited (busy_timeout) while callers gave up.
        if job.caller_gone() {
            continue;
        }
        match tx.savepoint() {
            Ok(mut sp) => {
                let (ran, reply) = job.run(&sp);
                let kept = match ran {
                    Ok(()) => sp.commit().map_err(map_err),
                    Err(error) => {
                        if error.is_fault() {
                            fault.get_or_insert(error);
                        }
                        sp.rollback().map_err(map_err)
                    }
                };
                if let Err(error) = &kept {
                    fault.get_or_insert(clone_error(error));
                }
                replies.push((reply, kept));
            }
            Err(e) => {
                let error = map_err(e);
                fault.get_or_insert(clone_error(&error));
                job.fail(error);
            }
        }
    }
    let committed = tx.commit().map_err(map_err);
    let health = match &committed {
        Err(e) => Err(clone_error(e)),
        Ok(()) => fault.map_or(Ok(()), Err),
    };
    for (reply, kept) in replies {
        let outcome = match (&committed, kept) {
            (Err(e), _) => Err(clone_error(e)),
            (Ok(()), kept) => kept,
        };
        reply(outcome);
    }
    Some(health)
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

    /// Ready means writes succeed: the files are as opened, nothing was found corrupt, and either no
    /// write has failed since the last that committed (then a read proves the store answers) or a
    /// probe write commits now.
    async fn ping(&self) -> StoreResult<()> {
        let tx = match &self.writes {
            Writes::Thread { tx, .. } => tx,
            Writes::Refused(reason) => return Err(StoreError::Unavailable(reason.clone())),
        };
        if tx.is_closed() {
            return Err(StoreError::Unavailable("the writer stopped".into()));
        }
        self.files.check()?;
        match self.health.verdict() {
            Verdict::Failed(error) => Err(error),
            Verdict::ProbeWrite => {
                self.write(|conn| {
                    conn.execute(
                        "INSERT INTO counters(name, value) VALUES ('write_probe', 1)
                         ON CONFLICT(name) DO UPDATE SET value = value + 1",
                        [],
                    )
                    .map(|_| ())
                    .map_err(map_err)
                })
                .await
            }
            Verdict::Read => {
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
        }
    }

    /// Close the readers, then the writer: the last connection to close checkpoints the log into the
    /// database file and removes it and the shared-memory file, so a clean stop leaves the file alone
    /// holding everything (what a start on a full or read-only disk needs).
    async fn close(&self) {
        if let Ok(_all) = self.read_permits.acquire_many(READERS as u32).await {
            if let Ok(mut pool) = self.readers.lock() {
                pool.clear();
            }
            self.read_permits.close();
        }
        let Writes::Thread { tx, thread } = &self.writes else {
            return;
        };
        let (ack, done) = oneshot::channel();
        if tx.send(Command::Close(ack)).await.is_ok() {
            let _ = done.await;
        }
        let handle = thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}
