//! The request being served: the fields every log line written while serving it carries (`request_id`,
//! `method`, `route`, and once known `cold_start` and `problem`).
//!
//! Two ways to carry them, chosen once when logging starts ([`super::request_spans`]):
//! - **Fields** (JSON lines with a plain `RUST_LOG` list, the default): the fields sit in a per-thread
//!   slot while the request's future is polled, and the JSON layer writes them into every line. A
//!   tracing span would cost a registry slot, a boxed extension and reference-counted enter, exit and
//!   close on every request, for nothing this format needs.
//! - **Span** (`--log-format pretty`, or `RUST_LOG` with span or field directives): a tracing span named
//!   `request` with the same fields, so the pretty format shows them and span directives can match them.
//!
//! Must never: leave one request's fields in the slot while another request (or none) is polled, or
//! lose the fields of a request when its future panics.

use std::cell::RefCell;

use axum::http::HeaderValue;

/// One request's log fields.
#[derive(Debug, Clone)]
pub struct RequestFields {
    request_id: Option<HeaderValue>,
    method: &'static str,
    route: &'static str,
    cold_start: Option<bool>,
    problem: Option<&'static str>,
}

thread_local! {
    /// The fields of the request whose future this thread is polling, if any.
    static CURRENT: RefCell<Option<RequestFields>> = const { RefCell::new(None) };
}

impl RequestFields {
    pub fn new(
        request_id: Option<HeaderValue>,
        method: &'static str,
        route: &'static str,
        cold_start: Option<bool>,
    ) -> Self {
        Self {
            request_id,
            method,
            route,
            cold_start,
            problem: None,
        }
    }

    /// The request id as logged (empty if the request had none that is text).
    pub fn request_id(&self) -> &str {
        self.request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The request id's bytes as they came (empty if the request had none).
    pub fn request_id_bytes(&self) -> &[u8] {
        self.request_id.as_ref().map_or(&[], |v| v.as_bytes())
    }

    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The matched route template (see [`super::events::route_label`]): never the raw path.
    pub fn route(&self) -> &'static str {
        self.route
    }

    pub fn cold_start(&self) -> Option<bool> {
        self.cold_start
    }

    pub fn problem(&self) -> Option<&'static str> {
        self.problem
    }

    /// A tracing span named `request` carrying these fields (the span way; see the module docs).
    pub fn span(&self) -> tracing::Span {
        let span = tracing::info_span!(
            "request",
            request_id = self.request_id(),
            method = self.method,
            route = self.route(),
            cold_start = tracing::field::Empty,
            problem = tracing::field::Empty
        );
        if let Some(cold) = self.cold_start {
            span.record("cold_start", cold);
        }
        span
    }
}

/// Run `f` with the fields in `slot` as the current request's. They are swapped into this thread's
/// slot for the call and back into `slot` after it (also when `f` panics), with whatever was current
/// before restored, so changes made inside (a recorded problem) stay with the request.
pub fn in_scope<R>(slot: &mut Option<RequestFields>, f: impl FnOnce() -> R) -> R {
    /// Swaps the two back when dropped: `slot` holds what was current while `f` runs.
    struct Restore<'a> {
        slot: &'a mut Option<RequestFields>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            swap_current(self.slot);
        }
    }
    // Only a `with_current` callback could hold the slot now, and none polls a request: should one
    // ever, `f` runs without these fields rather than panicking.
    if !swap_current(slot) {
        return f();
    }
    let _restore = Restore { slot };
    f()
}

/// Swap `fields` with this thread's current ones; `false` if the slot is in use.
fn swap_current(fields: &mut Option<RequestFields>) -> bool {
    CURRENT.with(|current| match current.try_borrow_mut() {
        Ok(mut current) => {
            std::mem::swap(fields, &mut current);
            true
        }
        Err(_) => false,
    })
}

/// Call `f` with the current request's fields, if this thread is serving one (the fields way).
pub fn with_current<R>(f: impl FnOnce(Option<&RequestFields>) -> R) -> R {
    CURRENT.with(|current| match current.try_borrow() {
        Ok(fields) => f(fields.as_ref()),
        Err(_) => f(None),
    })
}

/// Record the kind of problem the current request ends with, as its `problem` field.
pub fn record_problem(code: &'static str) {
    let recorded = CURRENT.with(|current| match current.try_borrow_mut().as_deref_mut() {
        Ok(Some(fields)) => {
            fields.problem = Some(code);
            true
        }
        _ => false,
    });
    if !recorded {
        tracing::Span::current().record("problem", code);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn fields(id: &'static str) -> Option<RequestFields> {
        Some(RequestFields::new(
            Some(HeaderValue::from_static(id)),
            "GET",
            "/messages/{id}",
            None,
        ))
    }

    fn current_id() -> Option<String> {
        with_current(|f| f.map(|f| f.request_id().to_owned()))
    }

    #[test]
    fn fields_are_current_only_inside_their_scope_and_nest() {
        assert_eq!(current_id(), None);
        let mut outer = fields("outer");
        let mut inner = fields("inner");
        in_scope(&mut outer, || {
            assert_eq!(current_id().as_deref(), Some("outer"));
            in_scope(&mut inner, || {
                assert_eq!(current_id().as_deref(), Some("inner"));
            });
            assert_eq!(current_id().as_deref(), Some("outer"));
        });
        assert_eq!(current_id(), None);
        assert_eq!(outer.unwrap().request_id(), "outer");
        assert_eq!(inner.unwrap().request_id(), "inner");
    }

    #[test]
    fn a_problem_recorded_inside_stays_with_the_request() {
        let mut slot = fields("r1");
        in_scope(&mut slot, || record_problem("not-found"));
        let fields = slot.expect("the fields come back to their slot");
        assert_eq!(fields.problem(), Some("not-found"));
        assert_eq!(fields.route(), "/messages/{id}");
        assert_eq!(current_id(), None);
    }

    #[test]
    fn a_panic_inside_restores_the_slot_and_clears_the_thread() {
        let mut slot = fields("r2");
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            in_scope(&mut slot, || panic!("handler panicked"))
        }));
        assert!(caught.is_err());
        assert_eq!(current_id(), None);
        assert_eq!(slot.expect("restored on unwind").request_id(), "r2");
    }
}
