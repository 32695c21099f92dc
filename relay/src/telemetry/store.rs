//! A `Store` wrapper that times every operation and emits `StoreOperationCompleted` for it, so every
//! backend is observed the same way without a line of telemetry inside the backends (which never
//! import telemetry). On a backend that logs inside its operations (DynamoDB's call attempts,
//! `Backend::logs_inside_operations`), each operation runs in a debug-level `store` span (`op`,
//! `backend`), so those lines say which operation they were part of; the others write no line
//! inside (the operation's own line carries both fields) and get the span only when it is exported.
//! With OpenTelemetry on, that span is exported as the request span's child, named by the operation,
//! with `db.system` and `db.operation.name`, status error when the store failed; the attempts are its
//! events.

use std::future::Future;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use telemetry_core::otel;
use tracing::Instrument;

use super::events::{Event, StoreOperationCompleted};
use crate::domain::{
    IdempotencyKey, LogCursor, LogPage, Message, MessageId, MessageUpdate, PageLimit, SavedValue,
};
use crate::store::{Backend, Created, DynStore, Store, StoreOp, StoreResult};

/// The target of the store spans, which the log set-up lets through at debug for exported spans.
pub const TARGET: &str = module_path!();

pub struct InstrumentedStore {
    inner: DynStore,
    /// Operations that failed with a fault, for [`Store::faults_seen`].
    faults: std::sync::atomic::AtomicU64,
}

impl InstrumentedStore {
    pub fn new(inner: DynStore) -> Self {
        Self {
            inner,
            faults: std::sync::atomic::AtomicU64::new(0),
        }
    }

    async fn timed<T>(
        &self,
        op: StoreOp,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let start = Instant::now();
        // The span only where something reads it (module docs); a debug span, so even then nothing
        // is made unless the relay's debug lines are on (buffer or sampling) or spans are exported.
        let kind = self.inner.backend();
        let (name, backend) = (op.as_str(), kind.as_str());
        let span = if kind.logs_inside_operations() || otel::exported(&tracing::Span::current()) {
            tracing::debug_span!("store", op = name, backend, "otel.name" = name)
        } else {
            tracing::Span::none()
        };
        let result = call.instrument(span.clone()).await;
        if result.as_ref().is_err_and(|e| e.is_fault()) {
            self.faults
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            otel::failed(&span, "store fault");
        }
        StoreOperationCompleted {
            backend: kind,
            op,
            latency: start.elapsed(),
            error: result.as_ref().err(),
        }
        .emit();
        result
    }
}

#[async_trait]
impl Store for InstrumentedStore {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    fn faults_seen(&self) -> u64 {
        self.faults.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn create_message(
        &self,
        message: &Message,
        key: Option<&IdempotencyKey>,
    ) -> StoreResult<Created> {
        self.timed(
            StoreOp::CreateMessage,
            self.inner.create_message(message, key),
        )
        .await
    }

    async fn get_message(&self, id: MessageId, now: DateTime<Utc>) -> StoreResult<Option<Message>> {
        self.timed(StoreOp::GetMessage, self.inner.get_message(id, now))
            .await
    }

    async fn update_message(
        &self,
        update: &MessageUpdate,
        now: DateTime<Utc>,
    ) -> StoreResult<Message> {
        self.timed(
            StoreOp::UpdateMessage,
            self.inner.update_message(update, now),
        )
        .await
    }

    async fn delete_message(&self, id: MessageId, now: DateTime<Utc>) -> StoreResult<Message> {
        self.timed(StoreOp::DeleteMessage, self.inner.delete_message(id, now))
            .await
    }

    async fn count_messages(&self) -> StoreResult<u64> {
        self.timed(StoreOp::CountMessages, self.inner.count_messages())
            .await
    }

    async fn sweep_expired(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        self.timed(StoreOp::SweepExpired, self.inner.sweep_expired(now, limit))
            .await
    }

    async fn append_timestamp(&self, at: DateTime<Utc>) -> StoreResult<()> {
        self.timed(StoreOp::AppendTimestamp, self.inner.append_timestamp(at))
            .await
    }

    async fn list_timestamps(
        &self,
        limit: PageLimit,
        cursor: Option<LogCursor>,
    ) -> StoreResult<LogPage> {
        self.timed(
            StoreOp::ListTimestamps,
            self.inner.list_timestamps(limit, cursor),
        )
        .await
    }

    async fn get_saved(&self) -> StoreResult<Option<SavedValue>> {
        self.timed(StoreOp::GetSaved, self.inner.get_saved()).await
    }

    async fn put_saved(&self, value: &SavedValue) -> StoreResult<()> {
        self.timed(StoreOp::PutSaved, self.inner.put_saved(value))
            .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.timed(StoreOp::Ping, self.inner.ping()).await
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}
