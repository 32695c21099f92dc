//! The DynamoDB client: how it is configured (region, endpoint override, timeouts, retries), how SDK
//! errors become `StoreError`s, and `create-table`.
//!
//! Must never: retry without bound, wait without a timeout, or turn a throttled or unreachable store
//! into anything but `Busy` / `Unavailable` (the HTTP layer answers those with 503 + Retry-After).

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::Region;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};

use super::attempts::AttemptLog;
use super::schema::{KeyAttribute, TABLE, TableDefinition};
use crate::store::{StoreError, StoreResult};

/// Establishing a connection (TCP and TLS) to DynamoDB.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One attempt of one call. DynamoDB answers in milliseconds; two seconds means it is in trouble.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// One call including its retries: well inside the relay's request timeout (10 s by default), so a
/// request fails with a 503 of its own rather than hitting the request timeout.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per call (the first one included): the SDK's standard mode retries throttling and
/// transient errors with exponential backoff and full jitter, drawing on a retry quota that runs dry
/// during an outage, so a dead store is not hammered.
const MAX_ATTEMPTS: u32 = 3;
const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The region used against a local endpoint when none is configured (the signature needs one).
const LOCAL_REGION: &str = "us-east-1";

/// A DynamoDB client for the relay: credentials and region from the usual AWS chain (environment,
/// profile, container or instance role), `endpoint` (or `AWS_ENDPOINT_URL`) for a local server.
pub async fn connect(endpoint: Option<&str>) -> StoreResult<Client> {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    let retries = RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(INITIAL_BACKOFF)
        .with_max_backoff(MAX_BACKOFF);
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(retries)
        .load()
        .await;
    let local = endpoint.is_some() || shared.endpoint_url().is_some();
    let mut config = aws_sdk_dynamodb::config::Builder::from(&shared).interceptor(AttemptLog);
    if let Some(url) = endpoint {
        config = config.endpoint_url(url);
    }
    if shared.region().is_none() {
        if !local {
            return Err(StoreError::Unavailable(
                "no AWS region is configured: set AWS_REGION (e.g. us-west-2)".into(),
            ));
        }
        config = config.region(Region::new(LOCAL_REGION));
    }
    Ok(Client::from_conf(config.build()))
}

/// Map an SDK error to a store error. Conditional-check failures never get here: the callers turn
/// those into `NotFound`, `PreconditionFailed` or a replay first.
pub fn map_sdk_error<E>(op: &str, table: &str, error: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = || format!("{op}: {}", DisplayErrorContext(&error));
    match &error {
        SdkError::TimeoutError(_) => {
            StoreError::Unavailable(format!("{op}: DynamoDB did not answer in time"))
        }
        // No (complete) response: connection refused or reset, DNS, TLS, credentials that could not
        // be resolved. All of them pass when the store or the network comes back.
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(detail())
        }
        SdkError::ServiceError(service) => classify(
            op,
            table,
            service.err().code().unwrap_or("Unknown"),
            service.raw().status().is_server_error(),
            detail(),
        ),
        _ => StoreError::Internal(detail()),
    }
}

/// Map a DynamoDB error code.
pub fn classify(
    op: &str,
    table: &str,
    code: &str,
    server_error: bool,
    detail: String,
) -> StoreError {
    match code {
        "ProvisionedThroughputExceededException"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TransactionConflictException"
        | "TransactionInProgressException" => StoreError::Busy(detail),
        "ResourceNotFoundException" => StoreError::Unavailable(format!(
            "{op}: the DynamoDB table `{table}` does not exist (create it: relay --store dynamodb:{table} create-table)"
        )),
        // Credentials refused: nothing the client did; the store cannot be used until an operator
        // fixes them, which a 503 and a red /readyz say better than a 500.
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "MissingAuthenticationToken"
        | "ExpiredTokenException"
        | "AccessDeniedException"
        | "InternalServerError"
        | "ServiceUnavailable" => StoreError::Unavailable(detail),
        _ if server_error => StoreError::Unavailable(detail),
        _ => StoreError::Internal(detail),
    }
}

/// What `create-table` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableCreated {
    /// The table was created and TTL enabled.
    Created,
    /// The table existed with the expected keys; TTL is enabled (now, if it was not).
    AlreadyExisted,
}

/// How long `create-table` waits for a new table to become active.
const ACTIVE_WAIT: Duration = Duration::from_secs(120);

/// Create `table` following [`TABLE`] and enable TTL on it; idempotent. An existing table must have
/// the same key schema, or this fails rather than touch it.
pub async fn create_table(client: &Client, table: &str) -> StoreResult<TableCreated> {
    let op = "create_table";
    let def = &TABLE;
    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::from(def.billing_mode))
        .set_key_schema(Some(key_schema(def.partition_key, def.sort_key)?));
    for attribute in def.attribute_definitions() {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attribute.name)
                .attribute_type(ScalarAttributeType::from(attribute.kind))
                .build()
                .map_err(build_error)?,
        );
    }
    for index in def.indexes {
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(index.name)
                .set_key_schema(Some(key_schema(index.partition_key, index.sort_key)?))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(index.projection))
                        .build(),
                )
                .build()
                .map_err(build_error)?,
        );
    }
    let outcome = match request.send().await {
        Ok(_) => TableCreated::Created,
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("ResourceInUseException") => {
            TableCreated::AlreadyExisted
        }
        Err(e) => return Err(map_sdk_error(op, table, e)),
    };
    wait_until_active(client, table, def).await?;
    enable_ttl(client, table, def).await?;
    Ok(outcome)
}

fn key_schema(pk: KeyAttribute, sk: KeyAttribute) -> StoreResult<Vec<KeySchemaElement>> {
    [(pk, KeyType::Hash), (sk, KeyType::Range)]
        .into_iter()
        .map(|(attribute, kind)| {
            KeySchemaElement::builder()
                .attribute_name(attribute.name)
                .key_type(kind)
                .build()
                .map_err(build_error)
        })
        .collect()
}

pub(super) fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Internal(format!("cannot build a DynamoDB request: {e}"))
}

async fn wait_until_active(client: &Client, table: &str, def: &TableDefinition) -> StoreResult<()> {
    let deadline = tokio::time::Instant::now() + ACTIVE_WAIT;
    loop {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| map_sdk_error("describe_table", table, e))?;
        let Some(description) = described.table() else {
            return Err(StoreError::Internal(format!(
                "DynamoDB described `{table}` without a table"
            )));
        };
        let keys: Vec<(&str, &str)> = description
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name(), k.key_type().as_str()))
            .collect();
        let expected = [
            (def.partition_key.name, "HASH"),
            (def.sort_key.name, "RANGE"),
        ];
        if keys != expected {
            return Err(StoreError::Internal(format!(
                "the table `{table}` exists with the key schema {keys:?}, not {expected:?}: \
                 use another table name"
            )));
        }
        let indexes_active = def.indexes.iter().all(|index| {
            description.global_secondary_indexes().iter().any(|gsi| {
                gsi.index_name() == Some(index.name)
                    && gsi.index_status().is_none_or(|s| s.as_str() == "ACTIVE")
            })
        });
        if description.table_status() == Some(&TableStatus::Active) && indexes_active {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::Unavailable(format!(
                "the table `{table}` is not active after {} s (or lacks the index `{}`)",
                ACTIVE_WAIT.as_secs(),
                def.indexes.first().map_or("", |i| i.name),
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn enable_ttl(client: &Client, table: &str, def: &TableDefinition) -> StoreResult<()> {
    let described = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| map_sdk_error("describe_time_to_live", table, e))?;
    let current = described.time_to_live_description();
    let status = current.and_then(|d| d.time_to_live_status());
    let attribute = current.and_then(|d| d.attribute_name());
    match status {
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
            if attribute == Some(def.ttl_attribute) =>
        {
            Ok(())
        }
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling) => {
            Err(StoreError::Internal(format!(
                "the table `{table}` has TTL on `{}`, not `{}`: disable it first",
                attribute.unwrap_or_default(),
                def.ttl_attribute
            )))
        }
        _ => {
            client
                .update_time_to_live()
                .table_name(table)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(def.ttl_attribute)
                        .enabled(true)
                        .build()
                        .map_err(build_error)?,
                )
                .send()
                .await
                .map_err(|e| map_sdk_error("update_time_to_live", table, e))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_busy_and_outages_are_unavailable() {
        let busy = classify(
            "op",
            "t",
            "ProvisionedThroughputExceededException",
            false,
            "x".into(),
        );
        assert!(matches!(busy, StoreError::Busy(_)));
        let gone = classify("op", "t", "ResourceNotFoundException", false, "x".into());
        assert!(
            matches!(gone, StoreError::Unavailable(ref m) if m.contains("create-table")),
            "{gone:?}"
        );
        let down = classify("op", "t", "SomethingNew", true, "x".into());
        assert!(matches!(down, StoreError::Unavailable(_)));
        let bug = classify("op", "t", "ValidationException", false, "x".into());
        assert!(matches!(bug, StoreError::Internal(_)));
    }
}
