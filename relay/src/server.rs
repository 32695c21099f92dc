//! The accept loop: the Router served on every accepted connection (HTTP/1.1, and HTTP/2 with prior
//! knowledge, as axum's `serve` does), within limits that no client can get around:
//! - at most `max_connections` open at once, kept below the open-file limit (raised to its hard
//!   maximum at start, [`raise_open_file_limit`]). At the cap, accepting pauses: new connections wait
//!   in the kernel's queue until one closes, and the relay never runs out of descriptors;
//! - a request head must arrive within `header_read_timeout` of its first byte (a slowloris client
//!   is cut off), and a connection with no request in flight and no traffic is closed after
//!   `idle_timeout` (keep-alive);
//! - a request head over [`MAX_HEAD_BYTES`] is refused (hyper answers 431), which also bounds what a
//!   half-sent head can pin in memory;
//! - at shutdown, connections with no request in flight close at once (an idle or half-sent one
//!   cannot hold the drain); the others finish their request and close.
//!
//! Every connection's end is counted by reason ([`ConnectionClosed`]). What hyper answers by itself,
//! before any of our code runs (431, 414, 400 for a malformed request line or header), has no request
//! id or problem body, since hyper writes it: it is counted and logged here, by its reason.
//!
//! Must never: let a client's stall hold a slot or the shutdown past its timeout.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::config::Config;
use crate::telemetry::events::{
    AcceptFailed, CloseReason, ConnectionClosed, ConnectionLimitReached, ConnectionOpened, Event,
};

/// The largest request head (request line and headers) accepted; hyper answers 431 above it.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Descriptors kept free of connections: the database, its journal and lock, stdout, the listener,
/// outbound connections to AWS.
const RESERVED_FILES: u64 = 64;

/// What a connection may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// The configured limits, the connection cap lowered to fit under `open_files` (the soft limit
    /// on open files) when it would not. Returns whether it was lowered.
    pub fn new(config: &Config, open_files: u64) -> (Self, bool) {
        let fits = open_files.saturating_sub(RESERVED_FILES).max(1);
        let wanted = u64::from(config.max_connections);
        let limits = Self {
            max_connections: wanted.min(fits) as usize,
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
        };
        (limits, wanted > fits)
    }
}

/// Raise the soft limit on open files to the hard limit (the usual default soft limit, 1024, is a
/// few hundred idle connections); return the soft limit now in force.
pub fn raise_open_file_limit() -> u64 {
    #[cfg(unix)]
    {
        let hard = rlimit::Resource::NOFILE.get_hard().unwrap_or(1024);
        match rlimit::increase_nofile_limit(hard) {
            Ok(soft) => soft,
            Err(_) => rlimit::Resource::NOFILE.get_soft().unwrap_or(1024),
        }
    }
    #[cfg(not(unix))]
    {
        u64::MAX
    }
}

/// Serve `router` on `listener` until `stop` turns true, then let the connections finish (see the
/// module's opening comment) and return once every one has closed. `peer_addresses`: give requests
/// the peer's address (`ConnectInfo`), for the rate limiter, its one reader.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    peer_addresses: bool,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The head timeout is ours ([`Watched`]): hyper's runs from the moment a connection waits for a
    // request, so it would also be the idle timeout.
    builder
        .http1()
        .max_buf_size(MAX_HEAD_BYTES)
        .header_read_timeout(None);
    let builder = Arc::new(builder);
    let mut at_cap = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                at_cap = false;
                slot
            }
            Err(_) => {
                if !std::mem::replace(&mut at_cap, true) {
                    ConnectionLimitReached {
                        limit: limits.max_connections,
                    }
                    .emit();
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = stopped(&mut stop) => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors or memory, for a moment: wait rather than spin.
                    AcceptFailed { error: &error }.emit();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            peer_addresses.then_some(peer),
            router.clone(),
            builder.clone(),
            limits,
            stop.clone(),
            slot,
        ));
    }
    drop(listener);
    // Every connection gives its slot back when it ends.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// One connection, from accept to close.
async fn connection(
    stream: TcpStream,
    peer: Option<SocketAddr>,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    ConnectionOpened.emit();
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Watched::new(stream, activity.clone(), limits));
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |mut request: hyper::Request<Incoming>| {
            let busy = Busy::start(&activity);
            if let Some(peer) = peer {
                request.extensions_mut().insert(ConnectInfo(peer));
            }
            let response = router.clone().oneshot(request);
            async move {
                let response = response.await;
                drop(busy);
                response
            }
        }
    });
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    let result = tokio::select! {
        result = served.as_mut() => result,
        () = stopped(&mut stop) => {
            if activity.in_flight.load(Ordering::Acquire) == 0 {
                // Idle or half-sent: nothing to finish. Dropping the connection closes it.
                ConnectionClosed { reason: CloseReason::Shutdown }.emit();
                return;
            }
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    ConnectionClosed {
        reason: activity.timed_out().unwrap_or_else(|| close_reason(result)),
    }
    .emit();
}

/// Why a connection ended, from what hyper returned.
fn close_reason(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) -> CloseReason {
    let Err(error) = result else {
        return CloseReason::Closed;
    };
    match error.downcast_ref::<hyper::Error>() {
        Some(error) if error.is_parse_too_large() => {
            // hyper tells the two apart only in its message.
            if error.to_string().contains("URI") {
                CloseReason::UriTooLong
            } else {
                CloseReason::HeadTooLarge
            }
        }
        Some(error) if error.is_parse() => CloseReason::Malformed,
        _ => CloseReason::Broken,
    }
}

/// What a connection's requests and its I/O share: how many requests are being handled, how many
/// have finished, and which timeout (if any) closed it.
#[derive(Debug, Default)]
struct Activity {
    in_flight: AtomicU32,
    finished: AtomicU32,
    timed_out: AtomicU8,
}

impl Activity {
    fn timed_out(&self) -> Option<CloseReason> {
        match self.timed_out.load(Ordering::Acquire) {
            1 => Some(CloseReason::IdleTimeout),
            2 => Some(CloseReason::HeaderTimeout),
            _ => None,
        }
    }
}

/// A request being handled, from the service call until its response is ready.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's socket, with the head and idle timeouts. While no request is in flight: if bytes
/// of a new request have come, the head must be complete `header_read_timeout` after the first of
/// them; if none have, the connection may stay silent for `idle_timeout` (each byte written, the
/// end of the last response, restarts that). A timeout fails the read, and hyper closes the
/// connection. While a request is in flight, no timeout here: the request timeout bounds it.
///
/// The timer is re-armed lazily: it may fire before the deadline that applies now (a response
/// restarted the idle clock since), and is then set again, so a busy connection does not move a
/// timer on every request.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    timer: Pin<Box<Sleep>>,
    /// `activity.finished` when last looked at: a change means a request ended since.
    finished: u32,
    idle_since: Option<Instant>,
    head_since: Option<Instant>,
}

impl Watched {
    fn new(stream: TcpStream, activity: Arc<Activity>, limits: ConnectionLimits) -> Self {
        Self {
            stream,
            activity,
            limits,
            timer: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            finished: 0,
            idle_since: None,
            head_since: None,
        }
    }

    /// Whether no request is in flight; forgets the clocks when one is or one ended since last time.
    fn idle(&mut self) -> bool {
        let idle = self.activity.in_flight.load(Ordering::Acquire) == 0;
        let finished = self.activity.finished.load(Ordering::Acquire);
        if !idle || finished != self.finished {
            self.finished = finished;
            self.idle_since = None;
            self.head_since = None;
        }
        idle
    }

    /// Make sure the task is woken by `deadline` at the latest (earlier is fine: see above).
    fn arm(&mut self, deadline: Instant, cx: &mut Context<'_>) {
        if deadline < self.timer.deadline() || self.timer.is_elapsed() {
            self.timer.as_mut().reset(deadline);
        }
        let _ = self.timer.as_mut().poll(cx);
    }

    /// Nothing to read, no request in flight: wait for the deadline that applies, or fail past it.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let now = Instant::now();
        let (deadline, reason, code) = match self.head_since {
            Some(since) => (
                since + self.limits.header_read_timeout,
                "request head not received in time",
                2,
            ),
            None => (
                *self.idle_since.get_or_insert(now) + self.limits.idle_timeout,
                "idle connection closed",
                1,
            ),
        };
        if now < deadline {
            self.arm(deadline, cx);
            return Poll::Pending;
        }
        self.activity.timed_out.store(code, Ordering::Release);
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, reason)))
    }

    /// Bytes went out: with no request in flight (the end of a response), the idle clock restarts,
    /// and the timer is armed here too, since hyper may not poll the read again before it is idle.
    fn wrote(&mut self, cx: &mut Context<'_>) {
        if self.activity.in_flight.load(Ordering::Acquire) == 0 {
            let now = Instant::now();
            self.idle_since = Some(now);
            self.arm(now + self.limits.idle_timeout, cx);
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        let idle = this.idle();
        match read {
            Poll::Ready(Ok(())) if idle && buf.filled().len() > before => {
                this.head_since.get_or_insert_with(Instant::now);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if idle => this.poll_deadline(cx),
            other => other,
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.wrote(cx);
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.wrote(cx);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
