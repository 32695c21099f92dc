//! The table as the DynamoDB store uses it: a client and a table name, and the calls every store
//! operation (and the sweeper) is built from: a consistent `GetItem`, a transaction retried on
//! contention, the transaction items (put, delete, counter shard), the counter sum and the log query.
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
    COUNTER_SHARDS, Counter, Item, LOG_PK, PK, SHARD_COUNT, SK, get_opt_i64, log_entry_from_item,
    log_sort_key, message_from_item, message_key, n, s,
};
use crate::domain::{LogCursor, Message, MessageId};
use crate::store::{StoreError, StoreResult};

/// How often a transaction cancelled by contention (another transaction on the same item, or
/// throttling) is tried again before the caller gets `Busy`. The SDK does not retry these.
pub(super) const CONTENTION_RETRIES: u32 = 4;
pub(super) const CONDITION_FAILED: &str = "ConditionalCheckFailed";

/// One DynamoDB table through one client.
#[derive(Clone)]
pub(super) struct Table {
    pub(super) client: Client,
    pub(super) name: Arc<str>,
}

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
        consistent: bool,
    ) -> StoreResult<Option<Item>> {
        let output = self
            .client
            .get_item()
            .table_name(self.name.as_ref())
            .set_key(Some(key))
            .consistent_read(consistent)
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
        self.get_item(op, message_key(id), true)
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

    /// Add `delta` to a random shard of `counter`.
    pub(super) fn count(&self, counter: Counter, delta: i64) -> StoreResult<TransactWriteItem> {
        let update = Update::builder()
            .table_name(self.name.as_ref())
            .set_key(Some(counter.random_shard_key()))
            .update_expression(format!("ADD {SHARD_COUNT} :delta"))
            .expression_attribute_values(":delta", n(delta))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// The sum of a counter's shards: one strongly consistent `BatchGetItem`, plus a retry for any
    /// keys DynamoDB left unprocessed.
    pub(super) async fn read_counter(&self, op: &str, counter: Counter) -> StoreResult<u64> {
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
                .request_items(self.name.as_ref(), pending.clone())
                .send()
                .await
                .map_err(|e| self.error(op, e))?;
            let items = output
                .responses()
                .and_then(|r| r.get(self.name.as_ref()))
                .map_or(&[][..], Vec::as_slice);
            for item in items {
                // Shards go negative when a message is counted down on another shard than it was
                // counted up on; only the sum means anything.
                total += get_opt_i64(item, SHARD_COUNT)?.unwrap_or(0);
            }
            match output
                .unprocessed_keys()
                .and_then(|u| u.get(self.name.as_ref()))
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
