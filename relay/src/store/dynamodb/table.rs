//! The table as the DynamoDB store uses it: a client and a table name, and the calls every store
//! operation (and the sweeper) is built from: a `GetItem`, a transaction retried on contention, the
//! transaction items (put, delete, counter shard), the counter sum and the log query.
//! Knows the schema's names, not the `Store` contract.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Delete, KeysAndAttributes, Put,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};

use super::client::{self, build_error};
use super::schema::{
    COUNTER_SHARDS, COUNTER_SHARDS_SET, Counter, Item, LOG_PK, MAX_COUNTER_SHARDS, PK, SHARD_COUNT,
    SK, get_opt_i64, log_entry_from_item, log_sort_key, message_from_item, message_key, n, s,
};
use super::shards::Shards;
use crate::domain::{LogCursor, Message, MessageId};
use crate::store::{StoreError, StoreResult};

/// How often a transaction cancelled by contention (another transaction on the same item, or
/// throttling) is tried again before the caller gets `Busy`. The SDK does not retry these.
pub(super) const CONTENTION_RETRIES: u32 = 4;
pub(super) const CONDITION_FAILED: &str = "ConditionalCheckFailed";

/// How a read sees the writes before it, and what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// Every write acknowledged before the read: one read unit per 4 KB of each item.
    Strong,
    /// Half the read units; a write acknowledged within DynamoDB's replication lag (usually well
    /// under a second) may not be seen yet. For the message count and the ping only.
    Eventual,
}

impl Read {
    fn consistent(self) -> bool {
        self == Self::Strong
    }
}

/// One DynamoDB table through one client.
#[derive(Clone)]
pub(super) struct Table {
    pub(super) client: Client,
    pub(super) name: Arc<str>,
    pub(super) shards: Arc<Shards>,
}

/// BatchGetItem's limit of keys per call.
const BATCH_KEYS: usize = 100;

impl Table {
    pub(super) fn error<E>(&self, op: &str, error: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        client::map_sdk_error(op, &self.name, error)
    }

    pub(super) async fn get_item(
        &self,
        op: &str,
        key: Item,
        read: Read,
    ) -> StoreResult<Option<Item>> {
        let output = self
            .client
            .get_item()
            .table_name(self.name.as_ref())
            .set_key(Some(key))
            .consistent_read(read.consistent())
            .send()
            .await
            .map_err(|e| self.error(op, e))?;
        Ok(output.item().cloned())
    }

    /// The message as stored (expired or not), read strongly consistently.
    pub(super) async fn stored_message(
        &self,
        op: &str,
        id: MessageId,
    ) -> StoreResult<Option<Message>> {
        self.get_item(op, message_key(id), Read::Strong)
            .await?
            .map(|item| message_from_item(id, &item))
            .transpose()
    }

    /// Run a transaction. `Ok(Err(_))` when a condition failed (the caller decides what that means);
    /// contention is retried here with jittered backoff, then reported as `Busy`.
    pub(super) async fn transact(
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

    pub(super) fn put(
        &self,
        item: Item,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> StoreResult<TransactWriteItem> {
        let mut put = Put::builder()
            .table_name(self.name.as_ref())
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

    pub(super) fn delete(
        &self,
        key: Item,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> StoreResult<TransactWriteItem> {
        let mut delete = Delete::builder()
            .table_name(self.name.as_ref())
            .set_key(Some(key))
            .condition_expression(condition);
        for (name, value) in values {
            delete = delete.expression_attribute_values(name, value);
        }
        Ok(TransactWriteItem::builder()
            .delete(delete.build().map_err(build_error)?)
            .build())
    }

    /// Add `delta` to a random one of the shards of `counter` this process knows (see `shards`).
    pub(super) async fn count(
        &self,
        counter: Counter,
        delta: i64,
    ) -> StoreResult<TransactWriteItem> {
        if self.shards.refresh_due() {
            // Only where the adds land depends on it, never the count: a failed read changes nothing.
            if let Err(error) = self.read_shard_settings().await {
                tracing::debug!(message = "Counter shard settings not read.", error = %error);
            }
        }
        let update = Update::builder()
            .table_name(self.name.as_ref())
            .set_key(Some(counter.random_shard_key(self.shards.known(counter))))
            .update_expression(format!("ADD {SHARD_COUNT} :delta"))
            .expression_attribute_values(":delta", n(delta))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// The sum of a counter's shards: `BatchGetItem`s of every shard this process knows, and of the
    /// rest when shard 0 names more (a raise this process had not seen), plus a retry for any keys
    /// DynamoDB left unprocessed.
    pub(super) async fn read_counter(
        &self,
        op: &str,
        counter: Counter,
        read: Read,
    ) -> StoreResult<u64> {
        let mut total: i64 = 0;
        let mut summed = 0;
        while summed < self.shards.known(counter) {
            let upto = self.shards.known(counter).min(summed + BATCH_KEYS);
            let keys: Vec<Item> = (summed..upto).map(|i| counter.shard_key(i)).collect();
            for item in self.read_shards(op, keys, read).await? {
                // Shards go negative when a message is counted down on another shard than it was
                // counted up on; only the sum means anything.
                total += get_opt_i64(&item, SHARD_COUNT)?.unwrap_or(0);
                self.learn_shards(counter, &item)?;
            }
            summed = upto;
        }
        Ok(u64::try_from(total).unwrap_or(0))
    }

    /// The shard items at `keys` (at most [`BATCH_KEYS`]); absent ones are left out.
    async fn read_shards(&self, op: &str, keys: Vec<Item>, read: Read) -> StoreResult<Vec<Item>> {
        let mut pending = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(read.consistent())
            .projection_expression(format!("{PK}, {SHARD_COUNT}, {COUNTER_SHARDS_SET}"))
            .build()
            .map_err(build_error)?;
        let mut found = Vec::new();
        for attempt in 0..=CONTENTION_RETRIES {
            let output = self
                .client
                .batch_get_item()
                .request_items(self.name.as_ref(), pending.clone())
                .send()
                .await
                .map_err(|e| self.error(op, e))?;
            if let Some(items) = output.responses().and_then(|r| r.get(self.name.as_ref())) {
                found.extend(items.iter().cloned());
            }
            match output
                .unprocessed_keys()
                .and_then(|u| u.get(self.name.as_ref()))
                .filter(|rest| !rest.keys().is_empty())
            {
                None => return Ok(found),
                Some(rest) => pending = rest.clone(),
            }
            tokio::time::sleep(jitter(attempt + 1)).await;
        }
        Err(StoreError::Busy(format!(
            "{op}: DynamoDB kept counter shards unprocessed"
        )))
    }

    /// Learn every counter's shard count from its shard 0 (for writers; readers learn as they read).
    pub(super) async fn read_shard_settings(&self) -> StoreResult<()> {
        let keys = Counter::ALL.iter().map(|c| c.shard_key(0)).collect();
        let items = self.read_shards("count_shards", keys, Read::Strong).await?;
        for counter in Counter::ALL {
            let zero = counter.shard_key(0);
            if let Some(item) = items.iter().find(|item| item.get(PK) == zero.get(PK)) {
                self.learn_shards(counter, item)?;
            }
        }
        Ok(())
    }

    /// Learn `counter`'s shard count from one of its shard items (only shard 0 carries one).
    fn learn_shards(&self, counter: Counter, item: &Item) -> StoreResult<()> {
        if let Some(shards) = get_opt_i64(item, COUNTER_SHARDS_SET)? {
            self.shards.learn(counter, clamp_shards(shards));
        }
        Ok(())
    }

    /// Raise every counter to `shards` shards. `Ok(Err(now))` when a counter already has more: shard
    /// counts are never lowered.
    pub(super) async fn raise_shards(&self, shards: usize) -> StoreResult<Result<(), usize>> {
        let op = "count_shards";
        for counter in Counter::ALL {
            let result = self
                .client
                .update_item()
                .table_name(self.name.as_ref())
                .set_key(Some(counter.shard_key(0)))
                .update_expression(format!("SET {COUNTER_SHARDS_SET} = :shards"))
                .condition_expression(format!(
                    "attribute_not_exists({COUNTER_SHARDS_SET}) OR {COUNTER_SHARDS_SET} <= :shards"
                ))
                .expression_attribute_values(":shards", n(shards as i64))
                .send()
                .await;
            match result {
                Ok(_) => self.shards.learn(counter, shards),
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
                {
                    self.read_shard_settings().await?;
                    return Ok(Err(self.shards.known(counter)));
                }
                Err(error) => return Err(self.error(op, error)),
            }
        }
        Ok(Ok(()))
    }

    /// Up to `want` log entries before `cursor`, newest first.
    pub(super) async fn read_log(
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
                .table_name(self.name.as_ref())
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
pub(super) struct Cancelled(Vec<CancellationReason>);

impl Cancelled {
    pub(super) fn condition_failed(&self, index: usize) -> bool {
        self.0.get(index).and_then(|r| r.code()) == Some(CONDITION_FAILED)
    }

    /// The item as it was when the condition at `index` failed.
    pub(super) fn old_item(&self, index: usize) -> Option<&Item> {
        self.0.get(index).and_then(|r| r.item())
    }

    /// A cancellation none of the caller's conditions explains: a bug or a schema mismatch.
    pub(super) fn unexpected(&self, op: &str) -> StoreError {
        let codes: Vec<&str> = self.0.iter().map(|r| r.code().unwrap_or("?")).collect();
        StoreError::Internal(format!("{op}: unexpected cancellation {codes:?}"))
    }
}

/// A stored shard count, within what a counter may have.
fn clamp_shards(stored: i64) -> usize {
    usize::try_from(stored).map_or(COUNTER_SHARDS, |n| {
        n.clamp(COUNTER_SHARDS, MAX_COUNTER_SHARDS)
    })
}

/// Full jitter over an exponential base of 20 ms.
fn jitter(attempt: u32) -> Duration {
    let ceiling = 20u64.saturating_mul(1 << attempt.min(6));
    Duration::from_millis(fastrand::u64(1..=ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contention_backoff_is_jittered_and_bounded() {
        for attempt in 1..=10 {
            let wait = jitter(attempt);
            assert!(wait >= Duration::from_millis(1));
            assert!(wait <= Duration::from_millis(20 * 64));
        }
    }
}
