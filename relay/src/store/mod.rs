//! Storage: the `Store` trait every backend implements, and the errors it may return.
//!
//! A store knows nothing of HTTP or caching. Every backend must pass the one conformance suite in
//! [`conformance`]; behaviour that differs between backends is a bug in a backend, not a feature.

#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
pub mod dynamodb;
pub mod memory;
pub mod sqlite;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    IdempotencyKey, LogCursor, LogPage, Message, MessageId, MessageUpdate, PageLimit, SavedValue,
};

/// What can go wrong in a store. `code()` is bounded: it is used as a metric label and picks the status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such message (or it has expired).
    #[error("no such message")]
    NotFound,
    /// An `If-Match` precondition did not hold.
    #[error("the message has changed since the given ETag")]
    PreconditionFailed,
    /// The store is reachable but refuses work for now (busy, throttled): retry later.
    #[error("the store is busy: {0}")]
    Busy(String),
    /// The store cannot be reached or has shut down.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The stored data is damaged (a corrupt page): nothing a retry fixes, and not a client mistake.
    #[error("the store is corrupt: {0}")]
    Corrupt(String),
    /// Anything else: a bug, never a client mistake.
    #[error("store failure: {0}")]
    Internal(String),
}

impl StoreError {
    /// The codes of the errors that are faults ([`Self::is_fault`]): the values the store error counter's
    /// `error_code` label takes, registered at 0 when the router is built.
    pub const FAULT_CODES: [&'static str; 4] = ["busy", "unavailable", "corrupt", "internal"];

    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::PreconditionFailed => "precondition_failed",
            Self::Busy(_) => "busy",
            Self::Unavailable(_) => "unavailable",
            Self::Corrupt(_) => "corrupt",
            Self::Internal(_) => "internal",
        }
    }

    /// Whether this error says something about the store's health (as opposed to the request).
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            Self::Busy(_) | Self::Unavailable(_) | Self::Corrupt(_) | Self::Internal(_)
        )
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The backend behind a store, a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
    Dynamodb,
}

impl Backend {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::Dynamodb => "dynamodb",
        }
    }

    /// Whether the backend writes lines of its own during an operation: DynamoDB one per call
    /// attempt (`dynamodb/attempts.rs`); SQLite and memory none.
    pub const fn logs_inside_operations(self) -> bool {
        matches!(self, Self::Dynamodb)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Store operations, a bounded metric label (one per `Store` method that does I/O).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    CreateMessage,
    GetMessage,
    UpdateMessage,
    DeleteMessage,
    CountMessages,
    SweepExpired,
    AppendTimestamp,
    ListTimestamps,
    GetSaved,
    PutSaved,
    Ping,
}

impl StoreOp {
    pub const ALL: [StoreOp; 11] = [
        Self::CreateMessage,
        Self::GetMessage,
        Self::UpdateMessage,
        Self::DeleteMessage,
        Self::CountMessages,
        Self::SweepExpired,
        Self::AppendTimestamp,
        Self::ListTimestamps,
        Self::GetSaved,
        Self::PutSaved,
        Self::Ping,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CreateMessage => "create_message",
            Self::GetMessage => "get_message",
            Self::UpdateMessage => "update_message",
            Self::DeleteMessage => "delete_message",
            Self::CountMessages => "count_messages",
            Self::SweepExpired => "sweep_expired",
            Self::AppendTimestamp => "append_timestamp",
            Self::ListTimestamps => "list_timestamps",
            Self::GetSaved => "get_saved",
            Self::PutSaved => "put_saved",
            Self::Ping => "ping",
        }
    }
}

/// The outcome of a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The message was written.
    New,
    /// The idempotency key had been used: nothing was written; this is the message the first request created,
    /// as it was then.
    Replayed(Message),
}

/// Storage for messages, the timestamp log and the saved string.
///
/// Counting: `count_messages` is O(1) and exact for creates and deletes. Messages that expire stay counted
/// until `sweep_expired` removes them, so the count may include messages expired within one sweep interval.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Write a new message. With a key: if the key was used within [`IdempotencyKey::RETENTION`], write
    /// nothing and return the first message; otherwise write the message and remember the key, atomically.
    async fn create_message(
        &self,
        message: &Message,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<Created>;

    /// A message that exists and has not expired at `now`.
    async fn get_message(&self, id: MessageId, now: DateTime<Utc>) -> StoreResult<Option<Message>>;

    /// Replace a message's body and expiry if it exists, has not expired and the precondition holds.
    /// Returns the message as stored, with its revision incremented.
    async fn update_message(
        &self,
        update: &MessageUpdate,
        now: DateTime<Utc>,
    ) -> StoreResult<Message>;

    /// Delete a message that exists and has not expired; return it as it was. Decrements the count once.
    async fn delete_message(&self, id: MessageId, now: DateTime<Utc>) -> StoreResult<Message>;

    /// The number of stored messages, in O(1). Every acknowledged create and delete is in it once; on
    /// DynamoDB it is read eventually consistent (half the read units), so the writes of the last
    /// moment (DynamoDB's replication lag, usually well under a second) may not be in it yet. The
    /// embedded stores include every write acknowledged before the call.
    async fn count_messages(&self) -> StoreResult<u64>;

    /// Remove up to `limit` messages (and idempotency records) that expired before `now`; return how many
    /// messages were removed.
    async fn sweep_expired(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<u64>;

    /// Append a timestamp to the `/app` log.
    async fn append_timestamp(&self, at: DateTime<Utc>) -> StoreResult<()>;

    /// A page of the `/app` log, newest first, starting after `cursor`.
    async fn list_timestamps(
        &self,
        limit: PageLimit,
        cursor: Option<LogCursor>,
    ) -> StoreResult<LogPage>;

    /// The saved string, if one was ever saved.
    async fn get_saved(&self) -> StoreResult<Option<SavedValue>>;

    async fn put_saved(&self, value: &SavedValue) -> StoreResult<()>;

    /// A cheap round trip that proves the store can serve requests (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// How many operations have failed with a fault ([`StoreError::is_fault`]) so far, where counted
    /// (the instrumented store does): `/readyz` reuses a check only while this stays the same.
    fn faults_seen(&self) -> u64 {
        0
    }

    /// Finish in-flight writes and release resources; called once on graceful shutdown.
    async fn close(&self) {}
}

pub type DynStore = Arc<dyn Store>;

#[cfg(test)]
mod fault_code_tests {
    use super::StoreError;

    #[test]
    fn the_fault_codes_are_exactly_the_codes_of_the_faults() {
        let every = [
            StoreError::NotFound,
            StoreError::PreconditionFailed,
            StoreError::Busy(String::new()),
            StoreError::Unavailable(String::new()),
            StoreError::Corrupt(String::new()),
            StoreError::Internal(String::new()),
        ];
        let faults: Vec<&str> = every
            .iter()
            .filter(|e| e.is_fault())
            .map(|e| e.code())
            .collect();
        assert_eq!(faults, StoreError::FAULT_CODES);
    }
}
