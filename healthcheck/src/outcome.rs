//! What a probe found: its result, the failure when it failed, and the requests it made. Plain data
//! that the runner (`probe`) fills in and the reports read; it imports only the canary's names.

use serde::{Deserialize, Serialize};

use crate::names::{FailureKind, ProbeName};

/// Why a probe failed: the kind, a sentence that names the request and what was wrong, and the HTTP
/// status and request id of the response at fault (none when no response came).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub reason: String,
    pub status: Option<u16>,
    pub request_id: Option<String>,
}

impl Failure {
    pub fn new(kind: FailureKind, reason: String) -> Self {
        Self {
            kind,
            reason,
            status: None,
            request_id: None,
        }
    }
}

/// One HTTP request a probe made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub method: String,
    /// Path and query, e.g. `/app?limit=1`.
    pub path: String,
    /// None when no response came.
    pub status: Option<u16>,
    pub latency_ms: f64,
    /// The `x-request-id` the relay answered with.
    pub request_id: Option<String>,
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub probe: ProbeName,
    /// Passed, within budget.
    pub ok: bool,
    /// The HTTP status of the response at fault when failed; of the last response when ok.
    pub status: Option<u16>,
    /// Wall time of the (last) attempt: every request, connection set-up included.
    pub latency_ms: f64,
    pub budget_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub failure: Option<FailureKind>,
    /// A precise reason when failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// A one-line summary of what was seen when ok.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
    /// The `x-request-id` this probe sent (`canary-<uuid>`) on every request of its last attempt.
    pub request_id_sent: String,
    /// The `x-request-id` the relay answered with (on the response at fault when failed): grep the
    /// relay's logs for it.
    pub request_id: Option<String>,
    /// The W3C trace of its last attempt (sent as `traceparent` on every request of it): the relay's
    /// lines of those requests carry it as `trace_id`.
    pub trace_id: String,
    pub attempts: u32,
    /// Why earlier attempts failed, when a retry was needed.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub earlier_failures: Vec<String>,
    pub steps: Vec<Step>,
}
