//! The DynamoDB store (`--store dynamodb:TABLE`): the relay's store on AWS, one table in the design of
//! [`schema`], reached through aws-sdk-dynamodb with timeouts and bounded, jittered retries.
//!
//! How it keeps the `Store` contract:
//! - the message count is a sharded counter ([`schema::COUNTER_SHARDS`] items), changed in the same
//!   `TransactWriteItems` as the create or delete it counts, and read with one `BatchGetItem`;
//! - a create never overwrites (`attribute_not_exists`), and a delete is conditional on the revision it
//!   read, so of concurrent deletes of one message exactly one commits and counts it down;
//! - reads compare the exact expiry (µs), so an expired message is never returned, whether or not it
//!   is still in the table; the sweeper ([`sweep`]) removes and uncounts expired messages through the
//!   sparse expiry index, well before DynamoDB TTL (the safety net) would.
//!
//! Must never: Scan (every access is by key, a Query on one partition, or a batch of keys); retry
//! without bound; let a conditional-check failure escape as anything but `NotFound`,
//! `PreconditionFailed` or an idempotent replay.

mod client;
pub mod schema;
mod sweep;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Delete, KeysAndAttributes, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};

use self::client::build_error;
pub use self::client::{TableCreated, connect, create_table};
use self::schema::{
    COUNTER_SHARDS, Counter, EXPIRES_AT, EXPIRES_AT_US, EXPIRY_BUCKET, FORGET_AT_US, Item, LOG_PK,
    MESSAGE_BODY, MESSAGE_REVISION, PK, SHARD_COUNT, SK, TTL_AT, UPDATED_AT_US, expiry_attributes,
    get_opt_i64, idempotency_item, idempotency_key, log_entry_from_item, log_item, log_position,
    log_sort_key, message_from_item, message_item, message_key, micros, n, ping_key,
    replayed_from_item, s, saved_from_item, saved_item, saved_key,
};
pub use self::schema::{TABLE, TableDefinition, table_definition};
use super::{Backend, Created, Store, StoreError, StoreResult};
use crate::domain::{
    IdempotencyKey, LogCursor, LogPage, Message, MessageId, MessageUpdate, PageLimit, Precondition,
    SavedValue,
};

/// How often a transaction cancelled by contention (another transaction on the same item, or
/// throttling) is tried again before the caller gets `Busy`. The SDK does not retry these.
const CONTENTION_RETRIES: u32 = 4;
/// `IN` takes at most 100 operands.
const MAX_IN_OPERANDS: usize = 100;
const CONDITION_FAILED: &str = "ConditionalCheckFailed";

/// The DynamoDB store. Cheap to clone (the SDK client is reference-counted).
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: Arc<str>,
}

impl DynamoStore {
    /// A store on `table`, with `endpoint` (or `AWS_ENDPOINT_URL`) overriding DynamoDB's for a local
    /// server. Makes no call: a store that is down at start-up is treated like one that goes down later
    /// (503s and a red `/readyz` until it answers).
    pub async fn connect(table: &str, endpoint: Option<&str>) -> StoreResult<Self> {
        Ok(Self::with_client(connect(endpoint).await?, table))
    }

    /// A store over an already configured client.
    pub fn with_client(client: Client, table: &str) -> Self {
        Self {
            client,
            table: Arc::from(table),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Create this store's table (see [`create_table`]).
    pub async fn create_table(&self) -> StoreResult<TableCreated> {
        create_table(&self.client, &self.table).await
    }

    fn error<E>(&self, op: &str, error: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        client::map_sdk_error(op, &self.table, error)
    }

    async fn get_item(&self, op: &str, key: Item, consistent: bool) -> StoreResult<Option<Item>> {
        let output = self
            .client
            .get_item()
            .table_name(self.table.as_ref())
            .set_key(Some(key))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(|e| self.error(op, e))?;
        Ok(output.item().cloned())
    }

    /// The message as stored (expired or not), read strongly consistently.
    async fn stored_message(&self, op: &str, id: MessageId) -> StoreResult<Option<Message>> {
        self.get_item(op, message_key(id), true)
            .await?
            .map(|item| message_from_item(id, &item))
            .transpose()
    }

    /// Run a transaction. `Ok(Err(_))` when a condition failed (the caller decides what that means);
    /// contention is retried here with jittered backoff, then reported as `Busy`.
    async fn transact(
        &self,
        op: &str,
        items: Vec<TransactWriteItem>,
    ) -> StoreResult<Result<(), Cancelled>> {
        let mut attempt = 0;
        loop {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let error = match result {
                Ok(_) => return Ok(Ok(())),
                Err(error) => error,
            };
            let reasons = match error.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                    cancelled.cancellation_reasons().to_vec()
                }
                _ => return Err(self.error(op, error)),
            };
            if reasons.iter().any(|r| r.code() == Some(CONDITION_FAILED)) {
                return Ok(Err(Cancelled(reasons)));
            }
            let codes: Vec<&str> = reasons.iter().filter_map(|r| r.code()).collect();
            let contended = codes.iter().any(|code| {
                matches!(
                    *code,
                    "TransactionConflict"
                        | "ThrottlingError"
                        | "ProvisionedThroughputExceeded"
                        | "RequestLimitExceeded"
                )
            });
            if !contended {
                return Err(StoreError::Internal(format!(
                    "{op}: transaction cancelled: {codes:?}"
                )));
            }
            if attempt >= CONTENTION_RETRIES {
                return Err(StoreError::Busy(format!(
                    "{op}: transaction cancelled by contention {} times: {codes:?}",
                    attempt + 1
                )));
            }
            attempt += 1;
            tokio::time::sleep(jitter(attempt)).await;
        }
    }

    fn put(
        &self,
        item: Item,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> StoreResult<TransactWriteItem> {
        let mut put = Put::builder()
            .table_name(self.table.as_ref())
            .set_item(Some(item))
            .condition_expression(condition)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (name, value) in values {
            put = put.expression_attribute_values(name, value);
        }
        Ok(TransactWriteItem::builder()
            .put(put.build().map_err(build_error)?)
            .build())
    }

    fn delete(
        &self,
        key: Item,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> StoreResult<TransactWriteItem> {
        let mut delete = Delete::builder()
            .table_name(self.table.as_ref())
            .set_key(Some(key))
            .condition_expression(condition);
        for (name, value) in values {
            delete = delete.expression_attribute_values(name, value);
        }
        Ok(TransactWriteItem::builder()
            .delete(delete.build().map_err(build_error)?)
            .build())
    }

    /// Add `delta` to a random shard of `counter`.
    fn count(&self, counter: Counter, delta: i64) -> StoreResult<TransactWriteItem> {
        let update = Update::builder()
            .table_name(self.table.as_ref())
            .set_key(Some(counter.random_shard_key()))
            .update_expression(format!("ADD {SHARD_COUNT} :delta"))
            .expression_attribute_values(":delta", n(delta))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// The sum of a counter's shards: one strongly consistent `BatchGetItem`, plus a retry for any
    /// keys DynamoDB left unprocessed.
    async fn read_counter(&self, op: &str, counter: Counter) -> StoreResult<u64> {
        let keys: Vec<Item> = (0..COUNTER_SHARDS).map(|i| counter.shard_key(i)).collect();
        let mut pending = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .projection_expression(SHARD_COUNT)
            .build()
            .map_err(build_error)?;
        let mut total: i64 = 0;
        for attempt in 0..=CONTENTION_RETRIES {
            let output = self
                .client
                .batch_get_item()
                .request_items(self.table.as_ref(), pending.clone())
                .send()
                .await
                .map_err(|e| self.error(op, e))?;
            let items = output
                .responses()
                .and_then(|r| r.get(self.table.as_ref()))
                .map_or(&[][..], Vec::as_slice);
            for item in items {
                // Shards go negative when a message is counted down on another shard than it was
                // counted up on; only the sum means anything.
                total += get_opt_i64(item, SHARD_COUNT)?.unwrap_or(0);
            }
            match output
                .unprocessed_keys()
                .and_then(|u| u.get(self.table.as_ref()))
                .filter(|rest| !rest.keys().is_empty())
            {
                None => return Ok(u64::try_from(total).unwrap_or(0)),
                Some(rest) => pending = rest.clone(),
            }
            tokio::time::sleep(jitter(attempt + 1)).await;
        }
        Err(StoreError::Busy(format!(
            "{op}: DynamoDB kept counter shards unprocessed"
        )))
    }

    /// Up to `want` log entries before `cursor`, newest first.
    async fn read_log(
        &self,
        want: usize,
        cursor: Option<LogCursor>,
    ) -> StoreResult<Vec<(u64, DateTime<Utc>)>> {
        let mut entries = Vec::with_capacity(want);
        let mut start = None;
        loop {
            let remaining = i32::try_from(want - entries.len()).unwrap_or(i32::MAX);
            let mut query = self
                .client
                .query()
                .table_name(self.table.as_ref())
                .expression_attribute_values(":pk", s(LOG_PK))
                .scan_index_forward(false)
                .consistent_read(true)
                .limit(remaining)
                .set_exclusive_start_key(start.take());
            query = match cursor {
                Some(cursor) => query
                    .key_condition_expression(format!("{PK} = :pk AND {SK} < :upper"))
                    .expression_attribute_values(":upper", s(log_sort_key(cursor.position()))),
                None => query.key_condition_expression(format!("{PK} = :pk")),
            };
            let output = query
                .send()
                .await
                .map_err(|e| self.error("list_timestamps", e))?;
            for item in output.items() {
                entries.push(log_entry_from_item(item)?);
            }
            match output.last_evaluated_key() {
                Some(last) if entries.len() < want => start = Some(last.clone()),
                _ => return Ok(entries),
            }
        }
    }
}

/// A transaction whose condition failed, with DynamoDB's reason for each of its items, in order.
struct Cancelled(Vec<CancellationReason>);

impl Cancelled {
    fn condition_failed(&self, index: usize) -> bool {
        self.0.get(index).and_then(|r| r.code()) == Some(CONDITION_FAILED)
    }

    /// The item as it was when the condition at `index` failed.
    fn old_item(&self, index: usize) -> Option<&Item> {
        self.0.get(index).and_then(|r| r.item())
    }

    /// A cancellation none of the caller's conditions explains: a bug or a schema mismatch.
    fn unexpected(&self, op: &str) -> StoreError {
        let codes: Vec<&str> = self.0.iter().map(|r| r.code().unwrap_or("?")).collect();
        StoreError::Internal(format!("{op}: unexpected cancellation {codes:?}"))
    }
}

/// Full jitter over an exponential base of 20 ms.
fn jitter(attempt: u32) -> Duration {
    let ceiling = 20u64.saturating_mul(1 << attempt.min(6));
    Duration::from_millis(fastrand::u64(1..=ceiling))
}

#[async_trait]
impl Store for DynamoStore {
    fn backend(&self) -> Backend {
        Backend::Dynamodb
    }

    async fn create_message(
        &self,
        message: &Message,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<Created> {
        let op = "create_message";
        let created_us = micros(message.created_at);
        let mut items = vec![
            self.put(
                message_item(message),
                &format!("attribute_not_exists({PK})"),
                vec![],
            )?,
            self.count(Counter::Messages, 1)?,
        ];
        const RECORD: usize = 2;
        if let Some(key) = idempotency {
            // The key may be reused once its record is forgotten, even before DynamoDB TTL removed it.
            items.push(self.put(
                idempotency_item(key, message),
                &format!("attribute_not_exists({PK}) OR {FORGET_AT_US} <= :created"),
                vec![(":created", n(created_us))],
            )?);
        }
        for _ in 0..=CONTENTION_RETRIES {
            let cancelled = match self.transact(op, items.clone()).await? {
                Ok(()) => return Ok(Created::New),
                Err(cancelled) => cancelled,
            };
            if let (Some(key), true) = (idempotency, cancelled.condition_failed(RECORD)) {
                // The key was used within its retention: nothing was written; replay the first message.
                let record = match cancelled.old_item(RECORD) {
                    Some(item) => Some(item.clone()),
                    None => self.get_item(op, idempotency_key(key), true).await?,
                };
                if let Some(first) = record
                    .map(|item| replayed_from_item(&item, message.created_at))
                    .transpose()?
                    .flatten()
                {
                    return Ok(Created::Replayed(first));
                }
                // The record was forgotten between the write and the read: write again.
                continue;
            }
            if cancelled.condition_failed(0) {
                return Err(StoreError::Internal(format!(
                    "message id {} already exists",
                    message.id
                )));
            }
            return Err(cancelled.unexpected(op));
        }
        Err(StoreError::Busy(format!(
            "{op}: the idempotency record kept changing"
        )))
    }

    async fn get_message(&self, id: MessageId, now: DateTime<Utc>) -> StoreResult<Option<Message>> {
        // Strongly consistent: a client that just created a message must be able to read it.
        Ok(self
            .stored_message("get_message", id)
            .await?
            .filter(|m| !m.is_expired_at(now)))
    }

    async fn update_message(
        &self,
        update: &MessageUpdate,
        now: DateTime<Utc>,
    ) -> StoreResult<Message> {
        let op = "update_message";
        let mut revisions: Option<Vec<u64>> = match &update.precondition {
            Precondition::None | Precondition::Exists => None,
            Precondition::RevisionIn(list) => {
                let mut list: Vec<u64> = list.iter().map(|r| r.0).collect();
                list.sort_unstable();
                list.dedup();
                Some(list)
            }
        };
        if revisions
            .as_ref()
            .is_some_and(|list| list.is_empty() || list.len() > MAX_IN_OPERANDS)
        {
            // `IN` takes 1 to 100 operands: check such a precondition against a fresh read, then
            // write on the condition that the revision is still the one read.
            let current = self
                .stored_message(op, update.id)
                .await?
                .filter(|m| !m.is_expired_at(now))
                .ok_or(StoreError::NotFound)?;
            if !update.precondition.admits(current.revision) {
                return Err(StoreError::PreconditionFailed);
            }
            revisions = Some(vec![current.revision.0]);
        }

        let now_us = micros(now);
        let mut values: HashMap<String, AttributeValue> = HashMap::from([
            (":body".to_owned(), s(update.body.as_str())),
            (":now".to_owned(), n(now_us)),
            (":one".to_owned(), n(1)),
        ]);
        let mut set = vec![
            format!("{MESSAGE_BODY} = :body"),
            format!("{UPDATED_AT_US} = :now"),
        ];
        let mut expression = String::new();
        match update.ttl {
            Some(ttl) => {
                for (name, value) in expiry_attributes(update.id, ttl.expiry_from(now)) {
                    set.push(format!("{name} = :{name}"));
                    values.insert(format!(":{name}"), value);
                }
            }
            None => {
                expression =
                    format!(" REMOVE {EXPIRES_AT_US}, {EXPIRES_AT}, {EXPIRY_BUCKET}, {TTL_AT}");
            }
        }
        let expression = format!(
            "SET {} ADD {MESSAGE_REVISION} :one{expression}",
            set.join(", ")
        );
        let mut condition = format!(
            "attribute_exists({PK}) AND (attribute_not_exists({EXPIRES_AT_US}) OR {EXPIRES_AT_US} > :now)"
        );
        if let Some(list) = revisions {
            let names: Vec<String> = (0..list.len()).map(|i| format!(":rev{i}")).collect();
            condition.push_str(&format!(
                " AND {MESSAGE_REVISION} IN ({})",
                names.join(", ")
            ));
            for (name, revision) in names.into_iter().zip(list) {
                values.insert(name, n(i64::try_from(revision).unwrap_or(i64::MAX)));
            }
        }
        let result = self
            .client
            .update_item()
            .table_name(self.table.as_ref())
            .set_key(Some(message_key(update.id)))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => match output.attributes() {
                Some(item) => message_from_item(update.id, item),
                None => Err(StoreError::Internal(format!(
                    "{op}: DynamoDB returned no attributes"
                ))),
            },
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                // Absent, expired, or another revision: a read tells which.
                match self.get_message(update.id, now).await? {
                    None => Err(StoreError::NotFound),
                    Some(_) => Err(StoreError::PreconditionFailed),
                }
            }
            Err(error) => Err(self.error(op, error)),
        }
    }

    async fn delete_message(&self, id: MessageId, now: DateTime<Utc>) -> StoreResult<Message> {
        let op = "delete_message";
        for _ in 0..=CONTENTION_RETRIES {
            // A transaction cannot return the deleted item: read it, then delete exactly the revision
            // read. Of concurrent deletes only one can meet that condition, so the count goes down once.
            let current = self
                .stored_message(op, id)
                .await?
                .ok_or(StoreError::NotFound)?;
            let revision = i64::try_from(current.revision.0).unwrap_or(i64::MAX);
            let items = vec![
                self.delete(
                    message_key(id),
                    &format!("{MESSAGE_REVISION} = :rev"),
                    vec![(":rev", n(revision))],
                )?,
                self.count(Counter::Messages, -1)?,
            ];
            match self.transact(op, items).await? {
                // An expired message is gone for the caller: it is removed (and uncounted) all the
                // same, but the answer is 404, as for a read.
                Ok(()) if current.is_expired_at(now) => return Err(StoreError::NotFound),
                Ok(()) => return Ok(current),
                // Updated or deleted meanwhile: read again.
                Err(cancelled) if cancelled.condition_failed(0) => continue,
                Err(cancelled) => {
                    return Err(cancelled.unexpected(op));
                }
            }
        }
        Err(StoreError::Busy(format!(
            "{op}: the message kept changing while being deleted"
        )))
    }

    async fn count_messages(&self) -> StoreResult<u64> {
        self.read_counter("count_messages", Counter::Messages).await
    }

    async fn sweep_expired(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        sweep::sweep_expired(self, now, limit).await
    }

    async fn append_timestamp(&self, at: DateTime<Utc>) -> StoreResult<()> {
        let op = "append_timestamp";
        for _ in 0..=CONTENTION_RETRIES {
            let items = vec![
                self.put(
                    log_item(log_position(at), at),
                    &format!("attribute_not_exists({PK})"),
                    vec![],
                )?,
                self.count(Counter::Log, 1)?,
            ];
            match self.transact(op, items).await? {
                Ok(()) => return Ok(()),
                // Another entry took this position (same microsecond, same draw): draw again.
                Err(cancelled) if cancelled.condition_failed(0) => continue,
                Err(cancelled) => {
                    return Err(cancelled.unexpected(op));
                }
            }
        }
        Err(StoreError::Busy(format!(
            "{op}: no free log position after {} draws",
            CONTENTION_RETRIES + 1
        )))
    }

    async fn list_timestamps(
        &self,
        limit: PageLimit,
        cursor: Option<LogCursor>,
    ) -> StoreResult<LogPage> {
        let limit = limit.get() as usize;
        // One more than a page tells whether there is a next page.
        let (total, mut entries) = tokio::try_join!(
            self.read_counter("list_timestamps", Counter::Log),
            self.read_log(limit + 1, cursor),
        )?;
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next = entries
            .last()
            .filter(|_| more)
            .map(|(position, _)| LogCursor::new(*position));
        Ok(LogPage {
            total,
            timestamps: entries.into_iter().map(|(_, at)| at).collect(),
            next,
        })
    }

    async fn get_saved(&self) -> StoreResult<Option<SavedValue>> {
        self.get_item("get_saved", saved_key(), true)
            .await?
            .map(|item| saved_from_item(&item))
            .transpose()
    }

    async fn put_saved(&self, value: &SavedValue) -> StoreResult<()> {
        self.client
            .put_item()
            .table_name(self.table.as_ref())
            .set_item(Some(saved_item(value)))
            .send()
            .await
            .map_err(|e| self.error("put_saved", e))?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        // A GetItem of a key never written: half a read unit, and the only permission it needs is the
        // one the relay has anyway (DescribeTable would need its own).
        self.get_item("ping", ping_key(), false).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "No request path may Scan": the simplest proof is that no code here can issue one.
    #[test]
    fn nothing_in_this_backend_can_scan() {
        let scan_call = concat!(".sc", "an()");
        for (file, source) in [
            ("mod.rs", include_str!("mod.rs")),
            ("sweep.rs", include_str!("sweep.rs")),
            ("client.rs", include_str!("client.rs")),
            ("schema.rs", include_str!("schema.rs")),
        ] {
            assert!(!source.contains(scan_call), "{file} issues a Scan");
        }
    }

    #[test]
    fn contention_backoff_is_jittered_and_bounded() {
        for attempt in 1..=10 {
            let wait = jitter(attempt);
            assert!(wait >= Duration::from_millis(1));
            assert!(wait <= Duration::from_millis(20 * 64));
        }
    }
}
