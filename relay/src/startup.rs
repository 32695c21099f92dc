//! Build the application from a `Config`: open the store, assemble the one Router (routes, state, and
//! every layer, applied once), start the background tasks, and serve until a shutdown signal.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::SizeAbove;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::config::{Config, StoreUri};
use crate::domain::now;
use crate::http::error::ApiError;
use crate::http::extract::truncate;
use crate::http::layers::{NewRequestId, RateLimit, drop_malformed_request_id, rate_limit};
use crate::http::openapi::{self, ApiDoc, OpenApiJson};
use crate::http::response_step::{self, ResponseStepLayer};
use crate::http::{AppState, Context, app_log, assets, health, messages, paste, saved};
use crate::server::{self, ConnectionLimits};
use crate::service::Messages;
use crate::store::dynamodb::DynamoStore;
use crate::store::memory::MemoryStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{DynStore, StoreError};
use crate::telemetry;
use crate::telemetry::Runtime;
use crate::telemetry::events::{Event, LogLinesDropped, MessagesExpired, RelayStarted};
use crate::telemetry::handles::{self, UNMATCHED_ROUTE};
use crate::telemetry::store::InstrumentedStore;

/// The most expired messages one sweep transaction removes.
const SWEEP_BATCH: usize = 1000;

/// A built application: its router (every layer applied), its store, and its background tasks.
pub struct App {
    pub router: Router,
    /// Whether requests need the peer's address (`ConnectInfo`): only for rate limiting.
    peer_addresses: bool,
    pub store: DynStore,
    pub openapi: OpenApiJson,
    background: Vec<JoinHandle<()>>,
}

/// Open the store named by the configuration, wrapped for telemetry.
pub async fn open_store(config: &Config) -> Result<DynStore, StoreError> {
    let inner: DynStore = match &config.store {
        StoreUri::Memory => Arc::new(MemoryStore::new()),
        StoreUri::Sqlite(path) => Arc::new(SqliteStore::open(path, config.integrity_check)?),
        StoreUri::Dynamodb { table } => {
            Arc::new(DynamoStore::connect(table, config.dynamodb_endpoint.as_deref()).await?)
        }
    };
    Ok(Arc::new(InstrumentedStore::new(inner)))
}

/// Build the application over an already opened store, for `runtime`.
pub fn build(config: &Config, store: DynStore, runtime: Runtime) -> App {
    let prometheus = if config.no_telemetry {
        None
    } else {
        telemetry::prometheus()
    };
    let state = AppState::new(Context {
        messages: Messages::new(store.clone(), config.cache_ttl, config.cache_max_bytes),
        store: store.clone(),
        max_message_bytes: config.max_message_bytes as usize,
        admin_token: config.admin_token.clone(),
        metrics: prometheus.clone(),
        ops: Default::default(),
    });
    let mut background = Vec::new();

    let mut api = OpenApiRouter::new()
        .merge(messages::router())
        .merge(paste::router())
        .merge(app_log::router())
        .merge(saved::router());
    let rate_limit_layer = RateLimit::new(
        config.rate_limit,
        config.rate_limit_burst(),
        config.forwarded_hops(),
    );
    // Only the rate limiter reads the peer address, and adding it costs allocations per request.
    let peer_addresses = rate_limit_layer.is_some();
    if let Some(limit) = rate_limit_layer {
        api = api.layer(from_fn_with_state(limit.clone(), rate_limit));
        background.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                limit.forget_idle_clients();
            }
        }));
    }

    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api)
        .merge(health::router())
        .merge(assets::router())
        .split_for_parts();
    openapi::finish(&mut openapi);
    let spec = OpenApiJson::new(openapi);
    let router = router
        .route(
            "/openapi.json",
            get(openapi::openapi_json).layer(Extension(spec.clone())),
        )
        .fallback(route_not_found);
    // Every metric handle, the request metrics of each route and method the router serves among them,
    // registered once (the exporter is installed by now).
    if !config.no_telemetry {
        let mut endpoints = vec![(UNMATCHED_ROUTE, Method::GET)];
        for (path, item) in &spec.document().paths.paths {
            for (method, operation) in [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::DELETE, &item.delete),
            ] {
                if operation.is_some() {
                    endpoints.push((path.as_str(), method));
                }
            }
        }
        let backend = store.backend();
        handles::register(
            endpoints.iter().map(|(route, method)| (*route, method)),
            backend,
        );
        if prometheus.is_some() {
            let routes = endpoints.iter().map(|(route, _)| *route);
            telemetry::events::register_rare_event_counters(routes, backend);
        }
    }
    // One stack around every route (and the fallback), outermost first. Per route, because the request
    // span and metrics need the matched route; in one `layer` call, because each call boxes every route
    // once more.
    let layers = ServiceBuilder::new()
        // A malformed incoming id is dropped, so a new one is made; every response carries the id.
        .map_request(drop_malformed_request_id as fn(Request) -> Request)
        .layer(SetRequestIdLayer::x_request_id(NewRequestId))
        .layer(PropagateRequestIdLayer::x_request_id())
        // Outside the response step, so it compresses the final body; only for clients that ask, and
        // only bodies over 1 KiB (the relay serves no images or streams, which tower-http's default
        // predicate also checks for, on every response).
        .layer(CompressionLayer::new().compress_when(SizeAbove::new(1024)))
        // Everything inside this point may answer with a bare error; from here out, errors are
        // problems and every response has the security headers. With telemetry on, it also makes
        // and enters the request span and emits the response event.
        .layer(ResponseStepLayer {
            observe: !config.no_telemetry,
        })
        // A handler that panics answers 500 through the response step (a problem, the reason in the
        // `Internal error.` line, the debug buffer written), and the connection lives on.
        .layer(CatchPanicLayer::custom(
            response_step::panic_response as fn(Box<dyn Any + Send>) -> Response,
        ))
        // A declared body over the limit is answered 413 at once; a longer chunked body fails its
        // extractor with 413 (axum's own extractor limit is off: this is the one limit).
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes as usize))
        // Inside the response step, so preflight answers get the security headers and are counted.
        .option_layer(cors(&config.cors_origins))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ))
        .layer(DefaultBodyLimit::disable());
    let router = router.layer(layers).with_state(state);

    background.push(spawn_sweeper(store.clone(), config.sweep_interval, runtime));
    if !config.no_telemetry {
        background.push(spawn_dropped_log_reporter());
    }
    App {
        router,
        peer_addresses,
        store,
        openapi: spec,
        background,
    }
}

async fn route_not_found(request: Request) -> axum::response::Response {
    ApiError::RouteNotFound(truncate(request.uri().path(), 128)).into_response()
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter(|o| !o.trim().is_empty())
        .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                header::ETAG,
                header::LOCATION,
                header::RETRY_AFTER,
                HeaderName::from_static("idempotency-replayed"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// Once a second: log lines dropped while stdout's reader stalled, reported once it is back.
fn spawn_dropped_log_reporter() -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            if let Some(count) = telemetry::take_dropped_log_lines() {
                LogLinesDropped { count }.emit();
            }
        }
    })
}

/// Remove expired messages every `interval`, in batches, so the count stays within one interval of exact.
/// A server sweeps at once (messages may have expired while it was down); a Lambda sandbox first after
/// one interval, which keeps a DynamoDB query off its init and its first invocation (a sandbox whose
/// first interval passes while it is frozen sweeps at its next invocation), and spares the table a
/// sweep per sandbox when many start together.
fn spawn_sweeper(store: DynStore, interval: Duration, runtime: Runtime) -> JoinHandle<()> {
    let interval = interval.max(Duration::from_millis(100));
    let first = match runtime {
        Runtime::Server => tokio::time::Instant::now(),
        Runtime::Lambda => tokio::time::Instant::now() + interval,
    };
    tokio::spawn(async move {
        let mut every = tokio::time::interval_at(first, interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            loop {
                // Failures are logged and counted by the instrumented store; try again next tick.
                let Ok(removed) = store.sweep_expired(now(), SWEEP_BATCH).await else {
                    break;
                };
                MessagesExpired { count: removed }.emit();
                if (removed as usize) < SWEEP_BATCH {
                    break;
                }
            }
        }
    })
}

impl App {
    /// Serve on `listener` within `limits` until `shutdown` resolves, then drain for at most `grace`
    /// (or until `now` resolves: a second stop signal) and close the store.
    pub async fn serve(
        self,
        listener: TcpListener,
        limits: ConnectionLimits,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        now: impl std::future::Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!(message = "Shutting down: draining in-flight requests.");
            let _ = stop_tx.send(true);
        });
        let mut deadline = stop_rx.clone();
        let server = server::serve(listener, self.router, self.peer_addresses, limits, stop_rx);
        tokio::select! {
            () = server => {}
            _ = async {
                let _ = deadline.wait_for(|stop| *stop).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(message = "Shutdown grace period over; closing remaining connections.");
            }
            _ = now => {
                tracing::warn!(message = "Second stop signal: closing remaining connections now.");
            }
        }
        for task in &self.background {
            task.abort();
        }
        self.store.close().await;
        tracing::info!(message = "Relay stopped.");
        Ok(())
    }
}

/// The process's stop signals, SIGTERM and SIGINT (Ctrl-C), counted from the moment `listen` is
/// called: the first asks for a graceful stop (drain for the grace period), the second for one at once.
pub struct StopSignals {
    count: tokio::sync::watch::Receiver<u32>,
}

impl StopSignals {
    pub fn listen() -> Self {
        let (tx, count) = tokio::sync::watch::channel(0u32);
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                    tx.send_modify(|n| *n += 1);
                }
            }
            #[cfg(not(unix))]
            while tokio::signal::ctrl_c().await.is_ok() {
                tx.send_modify(|n| *n += 1);
            }
        });
        Self { count }
    }

    /// Resolves once `n` signals have arrived.
    pub fn nth(&self, n: u32) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut count = self.count.clone();
        async move {
            let _ = count.wait_for(|seen| *seen >= n).await;
        }
    }
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The relay, built and bound, ready to serve (zero2prod's `Application`): `build` opens the store,
/// builds the app and binds the listener (port 0 picks a free one, which `port` then tells).
pub struct Application {
    app: App,
    listener: TcpListener,
    addr: SocketAddr,
    limits: ConnectionLimits,
    grace: Duration,
}

impl Application {
    pub async fn build(config: &Config) -> Result<Self, StartError> {
        let config = &crate::secrets::resolve(config.clone()).await?;
        let store = open_store(config).await?;
        let app = build(config, store, Runtime::Server);
        let bind = |source| StartError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let open_files = server::raise_open_file_limit();
        let (limits, lowered) = ConnectionLimits::new(config, open_files);
        if lowered {
            tracing::warn!(
                message = "--max-connections lowered to fit under the open-file limit.",
                max_connections = limits.max_connections as u64,
                open_files
            );
        }
        Ok(Self {
            app,
            listener,
            addr,
            limits,
            grace: config.shutdown_grace,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn store(&self) -> DynStore {
        self.app.store.clone()
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Serve until `shutdown` resolves, drain for the grace period, close the store.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let never = std::future::pending::<()>();
        self.app
            .serve(self.listener, self.limits, shutdown, never, self.grace)
            .await
    }

    /// Serve until the first stop signal, drain until the grace period ends or a second signal comes,
    /// close the store.
    pub async fn run_until_signalled(self, signals: StopSignals) -> std::io::Result<()> {
        self.app
            .serve(
                self.listener,
                self.limits,
                signals.nth(1),
                signals.nth(2),
                self.grace,
            )
            .await
    }
}

/// Open the store, build the app, bind and serve: what `relay serve` does.
pub async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let application = Application::build(&config).await?;
    // Handlers first: from the "started" line on, a stop signal always means a graceful stop.
    let signals = StopSignals::listen();
    RelayStarted {
        listen: &application.local_addr().to_string(),
        store: &config.store.to_string(),
        max_connections: Some(application.limits().max_connections),
    }
    .emit();
    application.run_until_signalled(signals).await?;
    Ok(())
}
