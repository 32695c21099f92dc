//! The store conformance suite: one set of behaviours every backend must show, run against each backend
//! by the tests (`relay/tests/api/store_conformance.rs`). Each case gets a fresh, empty store.
//!
//! It lives in the library (not under tests/) so a new backend's tests can call it in one line.
//! It panics on the first broken behaviour, naming the case; it must never be called outside tests.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;

use chrono::TimeDelta;

use super::{Created, DynStore, StoreError};
use crate::domain::{
    IdempotencyKey, LogCursor, Message, MessageBody, MessageId, MessageUpdate, PageLimit,
    Precondition, Revision, SavedValue, Ttl, now,
};

type Case = fn(DynStore) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("create_then_get_returns_the_same_message", |s| {
        Box::pin(create_then_get(s))
    }),
    ("unknown_id_is_none", |s| Box::pin(unknown_id_is_none(s))),
    ("expired_message_is_never_returned", |s| {
        Box::pin(expired_is_never_returned(s))
    }),
    ("count_is_exact_for_creates_and_deletes", |s| {
        Box::pin(count_is_exact(s))
    }),
    ("delete_returns_the_message_and_counts_down_once", |s| {
        Box::pin(delete_once(s))
    }),
    ("deleting_an_expired_message_is_not_found", |s| {
        Box::pin(delete_expired(s))
    }),
    ("update_replaces_body_and_expiry_and_bumps_revision", |s| {
        Box::pin(update_replaces(s))
    }),
    ("update_with_a_stale_revision_fails_its_precondition", |s| {
        Box::pin(update_precondition(s))
    }),
    ("update_of_a_missing_or_expired_message_is_not_found", |s| {
        Box::pin(update_missing(s))
    }),
    ("idempotent_create_replays_the_first_message", |s| {
        Box::pin(idempotent_replay(s))
    }),
    ("idempotency_keys_are_forgotten_after_retention", |s| {
        Box::pin(idempotency_forgotten(s))
    }),
    ("sweep_removes_expired_messages_and_counts_them_down", |s| {
        Box::pin(sweep(s))
    }),
    ("timestamp_log_pages_newest_first", |s| {
        Box::pin(timestamp_pages(s))
    }),
    ("saved_string_round_trips", |s| {
        Box::pin(saved_round_trip(s))
    }),
    ("ping_succeeds_on_a_healthy_store", |s| Box::pin(ping(s))),
    ("parallel_creates_keep_the_count_exact", |s| {
        Box::pin(parallel_creates(s))
    }),
    ("parallel_deletes_of_one_id_count_down_once", |s| {
        Box::pin(parallel_deletes(s))
    }),
];

/// Run every case against fresh stores made by `make`; closes each store after its case.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynStore>,
{
    for (name, case) in CASES {
        let store = make().await;
        eprintln!("conformance [{}]: {name}", store.backend());
        case(store.clone()).await;
        store.close().await;
    }
}

fn body(text: &str) -> MessageBody {
    MessageBody::from_stored(text)
}

fn ttl(seconds: i64) -> Option<Ttl> {
    Ttl::parse(seconds).ok()
}

async fn create(store: &DynStore, message: &Message) {
    match store.create_message(message, None).await {
        Ok(Created::New) => {}
        other => panic!("create should write a new message, got {other:?}"),
    }
}

async fn create_then_get(store: DynStore) {
    let with_ttl = Message::new(body("hello ✓ \"quoted\" <b>"), ttl(60));
    let without = Message::new(body("plain"), None);
    create(&store, &with_ttl).await;
    create(&store, &without).await;
    for m in [&with_ttl, &without] {
        let got = store.get_message(m.id, now()).await.expect("get");
        assert_eq!(
            got.as_ref(),
            Some(m),
            "a message reads back exactly as written"
        );
    }
}

async fn unknown_id_is_none(store: DynStore) {
    let got = store
        .get_message(MessageId::generate(), now())
        .await
        .expect("get");
    assert_eq!(got, None);
}

async fn expired_is_never_returned(store: DynStore) {
    let m = Message::new(body("short-lived"), ttl(5));
    create(&store, &m).await;
    let expiry = m.expires_at.expect("has an expiry");
    let before = store
        .get_message(m.id, expiry - TimeDelta::seconds(1))
        .await
        .expect("get");
    assert_eq!(before.as_ref(), Some(&m), "readable before its expiry");
    let at = store.get_message(m.id, expiry).await.expect("get");
    assert_eq!(
        at, None,
        "not readable at its expiry, even before any sweep"
    );
}

async fn count_is_exact(store: DynStore) {
    assert_eq!(store.count_messages().await.expect("count"), 0);
    let messages: Vec<Message> = (0..5)
        .map(|i| Message::new(body(&format!("m{i}")), None))
        .collect();
    for m in &messages {
        create(&store, m).await;
    }
    assert_eq!(store.count_messages().await.expect("count"), 5);
    store
        .delete_message(messages[0].id, now())
        .await
        .expect("delete");
    store
        .delete_message(messages[1].id, now())
        .await
        .expect("delete");
    assert_eq!(store.count_messages().await.expect("count"), 3);
}

async fn delete_once(store: DynStore) {
    let m = Message::new(body("bye"), None);
    create(&store, &m).await;
    let deleted = store.delete_message(m.id, now()).await.expect("delete");
    assert_eq!(deleted, m, "delete returns the message as it was");
    let again = store.delete_message(m.id, now()).await;
    assert!(
        matches!(again, Err(StoreError::NotFound)),
        "second delete: {again:?}"
    );
    assert_eq!(store.count_messages().await.expect("count"), 0);
    assert_eq!(store.get_message(m.id, now()).await.expect("get"), None);
}

async fn delete_expired(store: DynStore) {
    let m = Message::new(body("gone"), ttl(1));
    create(&store, &m).await;
    let later = now() + TimeDelta::seconds(2);
    let result = store.delete_message(m.id, later).await;
    assert!(
        matches!(result, Err(StoreError::NotFound)),
        "got {result:?}"
    );
    let count = store.count_messages().await.expect("count");
    assert!(
        count <= 1,
        "an expired message is counted at most until it is swept; count {count}"
    );
}

async fn update_replaces(store: DynStore) {
    let m = Message::new(body("v1"), ttl(60));
    create(&store, &m).await;
    let at = now();
    let update = MessageUpdate {
        id: m.id,
        body: body("v2"),
        ttl: None,
        precondition: Precondition::None,
    };
    let updated = store.update_message(&update, at).await.expect("update");
    assert_eq!(updated.body, body("v2"));
    assert_eq!(updated.revision, Revision(2));
    assert_eq!(
        updated.expires_at, None,
        "an update without a TTL clears the expiry"
    );
    assert_eq!(updated.created_at, m.created_at);
    assert_eq!(updated.updated_at, at);
    let got = store.get_message(m.id, now()).await.expect("get");
    assert_eq!(got.as_ref(), Some(&updated));
    assert_eq!(
        store.count_messages().await.expect("count"),
        1,
        "updates do not count"
    );

    let with_ttl = MessageUpdate {
        ttl: ttl(30),
        body: body("v3"),
        ..update
    };
    let updated = store.update_message(&with_ttl, at).await.expect("update");
    assert_eq!(updated.expires_at, Some(at + TimeDelta::seconds(30)));
    assert_eq!(updated.revision, Revision(3));
}

async fn update_precondition(store: DynStore) {
    let m = Message::new(body("v1"), None);
    create(&store, &m).await;
    let stale = MessageUpdate {
        id: m.id,
        body: body("v2"),
        ttl: None,
        precondition: Precondition::RevisionIn(vec![Revision(7)]),
    };
    let result = store.update_message(&stale, now()).await;
    assert!(
        matches!(result, Err(StoreError::PreconditionFailed)),
        "got {result:?}"
    );
    let got = store.get_message(m.id, now()).await.expect("get");
    assert_eq!(
        got.as_ref(),
        Some(&m),
        "a failed precondition changes nothing"
    );

    let current = MessageUpdate {
        precondition: Precondition::RevisionIn(vec![Revision(1)]),
        ..stale
    };
    let updated = store.update_message(&current, now()).await.expect("update");
    assert_eq!(updated.revision, Revision(2));
    let star = MessageUpdate {
        precondition: Precondition::Exists,
        ..current.clone()
    };
    assert!(store.update_message(&star, now()).await.is_ok());
    let replay = store.update_message(&current, now()).await;
    assert!(
        matches!(replay, Err(StoreError::PreconditionFailed)),
        "got {replay:?}"
    );
}

async fn update_missing(store: DynStore) {
    let missing = MessageUpdate {
        id: MessageId::generate(),
        body: body("x"),
        ttl: None,
        precondition: Precondition::Exists,
    };
    let result = store.update_message(&missing, now()).await;
    assert!(
        matches!(result, Err(StoreError::NotFound)),
        "got {result:?}"
    );

    let m = Message::new(body("brief"), ttl(1));
    create(&store, &m).await;
    let expired = MessageUpdate {
        id: m.id,
        precondition: Precondition::None,
        ..missing
    };
    let result = store
        .update_message(&expired, now() + TimeDelta::seconds(2))
        .await;
    assert!(
        matches!(result, Err(StoreError::NotFound)),
        "got {result:?}"
    );
}

async fn idempotent_replay(store: DynStore) {
    let key = IdempotencyKey::parse("order-42").expect("key");
    let first = Message::new(body("once"), ttl(60));
    let created = store
        .create_message(&first, Some(&key))
        .await
        .expect("create");
    assert_eq!(created, Created::New);
    let retry = Message::new(body("once"), ttl(60));
    let replayed = store
        .create_message(&retry, Some(&key))
        .await
        .expect("create");
    assert_eq!(
        replayed,
        Created::Replayed(first.clone()),
        "a retry returns the first message"
    );
    assert_eq!(
        store.count_messages().await.expect("count"),
        1,
        "and writes nothing"
    );
    assert_eq!(store.get_message(retry.id, now()).await.expect("get"), None);

    let other_key = IdempotencyKey::parse("order-43").expect("key");
    let second = Message::new(body("once"), ttl(60));
    let created = store
        .create_message(&second, Some(&other_key))
        .await
        .expect("create");
    assert_eq!(created, Created::New, "another key creates another message");
    assert_eq!(store.count_messages().await.expect("count"), 2);
}

async fn idempotency_forgotten(store: DynStore) {
    let key = IdempotencyKey::parse("k").expect("key");
    let first = Message::new(body("a"), None);
    create_with(&store, &first, &key).await;
    let mut much_later = Message::new(body("a"), None);
    much_later.created_at = first.created_at + IdempotencyKey::RETENTION + TimeDelta::seconds(1);
    much_later.updated_at = much_later.created_at;
    let result = store
        .create_message(&much_later, Some(&key))
        .await
        .expect("create");
    assert_eq!(
        result,
        Created::New,
        "a key past its retention creates a new message"
    );
}

async fn create_with(store: &DynStore, m: &Message, key: &IdempotencyKey) {
    let result = store.create_message(m, Some(key)).await.expect("create");
    assert_eq!(result, Created::New);
}

async fn sweep(store: DynStore) {
    let lasting = Message::new(body("stays"), None);
    create(&store, &lasting).await;
    for i in 0..5 {
        create(&store, &Message::new(body(&format!("e{i}")), ttl(1))).await;
    }
    assert_eq!(store.count_messages().await.expect("count"), 6);
    let later = now() + TimeDelta::seconds(2);
    let first = store.sweep_expired(later, 3).await.expect("sweep");
    assert_eq!(first, 3, "a sweep removes at most its limit");
    let second = store.sweep_expired(later, 3).await.expect("sweep");
    assert_eq!(second, 2);
    assert_eq!(store.sweep_expired(later, 3).await.expect("sweep"), 0);
    assert_eq!(store.count_messages().await.expect("count"), 1);
    assert!(
        store
            .get_message(lasting.id, later)
            .await
            .expect("get")
            .is_some()
    );
}

async fn timestamp_pages(store: DynStore) {
    let empty = store
        .list_timestamps(PageLimit::DEFAULT, None)
        .await
        .expect("list");
    assert_eq!(
        (empty.total, empty.timestamps.len(), empty.next),
        (0, 0, None)
    );
    let base = now();
    let written: Vec<_> = (0..7).map(|i| base + TimeDelta::milliseconds(i)).collect();
    for at in &written {
        store.append_timestamp(*at).await.expect("append");
    }
    let limit = PageLimit::parse(3).expect("limit");
    let mut seen = Vec::new();
    let mut cursor: Option<LogCursor> = None;
    let mut pages = 0;
    loop {
        let page = store.list_timestamps(limit, cursor).await.expect("list");
        assert_eq!(page.total, 7);
        assert!(page.timestamps.len() <= 3);
        seen.extend(page.timestamps);
        pages += 1;
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 10, "pagination must end");
    }
    let newest_first: Vec<_> = written.iter().rev().copied().collect();
    assert_eq!(seen, newest_first, "every timestamp once, newest first");
    assert_eq!(pages, 3);
}

async fn saved_round_trip(store: DynStore) {
    assert_eq!(store.get_saved().await.expect("get"), None);
    let value = SavedValue::parse("<b>bold</b> & \"quoted\"").expect("value");
    store.put_saved(&value).await.expect("put");
    assert_eq!(store.get_saved().await.expect("get"), Some(value));
    let next = SavedValue::parse("second").expect("value");
    store.put_saved(&next).await.expect("put");
    assert_eq!(store.get_saved().await.expect("get"), Some(next));
}

async fn ping(store: DynStore) {
    store.ping().await.expect("a healthy store answers a ping");
}

async fn parallel_creates(store: DynStore) {
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let m = Message::new(body(&format!("p{i}")), None);
                store.create_message(&m, None).await.map(|_| m.id)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.expect("task").expect("create"));
    }
    assert_eq!(store.count_messages().await.expect("count"), 64);
    for id in ids {
        assert!(store.get_message(id, now()).await.expect("get").is_some());
    }
}

async fn parallel_deletes(store: DynStore) {
    let keep = Message::new(body("keep"), None);
    let target = Message::new(body("target"), None);
    create(&store, &keep).await;
    create(&store, &target).await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let id = target.id;
            tokio::spawn(async move { store.delete_message(id, now()).await.is_ok() })
        })
        .collect();
    let mut successes = 0;
    for task in tasks {
        if task.await.expect("task") {
            successes += 1;
        }
    }
    assert_eq!(successes, 1, "exactly one of the parallel deletes succeeds");
    assert_eq!(store.count_messages().await.expect("count"), 1);
}
