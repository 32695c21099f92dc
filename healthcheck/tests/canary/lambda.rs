//! The Lambda handler, called directly with an EventBridge scheduled event against a relay on
//! loopback: no AWS and no Lambda runtime needed (publishing from the handler is in cloudwatch.rs).

use healthcheck::lambda::{Canary, ScheduledEvent, handler};
use healthcheck::names::ProbeName;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::json;

use crate::helpers::CanaryTarget;
use crate::helpers::spawn_relay;

/// What EventBridge Scheduler sends to a target on a `rate(1 minute)` schedule.
fn scheduled_event() -> LambdaEvent<ScheduledEvent> {
    let payload = json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-25T10:00:00Z",
        "region": "us-west-2",
        "resources": ["arn:aws:events:us-west-2:123456789012:rule/relay-canary-dev"],
        "detail": {}
    });
    let event: ScheduledEvent = serde_json::from_value(payload).unwrap();
    LambdaEvent::new(event, Context::default())
}

#[tokio::test]
async fn the_handler_runs_every_probe_for_a_scheduled_event() {
    let relay = spawn_relay().await;
    let mut settings = relay.settings();
    settings.stage = "dev".parse().unwrap();
    let canary = Canary {
        settings,
        publisher: None,
    };

    let invocation = handler(scheduled_event(), &canary).await.unwrap();
    assert!(invocation.ok, "{}", invocation.report.to_json());
    assert_eq!(invocation.headline, "5 of 5 probes passed");
    assert_eq!(invocation.published, 0, "no publisher, nothing published");
    assert_eq!(
        invocation.event_id.as_deref(),
        Some("53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa")
    );
    assert_eq!(invocation.report.stage, "dev");
    let probes: Vec<ProbeName> = invocation.report.probes.iter().map(|p| p.probe).collect();
    assert_eq!(probes, ProbeName::ALL);

    let result = serde_json::to_value(&invocation).unwrap();
    assert_eq!(result["ok"], true);
    assert_eq!(result["report"]["probes"][1]["probe"], "api-roundtrip");
}

#[tokio::test]
async fn a_failing_probe_is_data_not_an_invocation_error() {
    let relay = spawn_relay().await;
    let canary = Canary {
        settings: relay.settings(),
        publisher: None,
    };
    relay.shutdown().await;

    let invocation = handler(scheduled_event(), &canary)
        .await
        .expect("the invocation succeeds, so Lambda does not retry it and publish twice");
    assert!(!invocation.ok);
    assert_eq!(invocation.headline, "5 of 5 probes failed");
}

#[tokio::test]
async fn a_hand_made_empty_event_works_too() {
    let relay = spawn_relay().await;
    let canary = Canary {
        settings: relay.settings(),
        publisher: None,
    };
    let event: ScheduledEvent = serde_json::from_value(json!({})).unwrap();
    let invocation = handler(LambdaEvent::new(event, Context::default()), &canary)
        .await
        .unwrap();
    assert!(invocation.ok);
    assert_eq!(invocation.event_id, None);
}
