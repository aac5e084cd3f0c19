//! The server's connections: the accept loop, the cap on open connections, and each
//! connection's phase with its deadline (idle, request head, answer written).
//!
//! At `server.max_connections` a new connection is always accepted: the least useful open
//! connection is closed for it (idle first, then one still sending its request head, then
//! one still sending its body, then one not reading its answer, and a request being answered
//! last; the oldest first within each). Health checks and webhooks therefore keep being
//! served whatever an anonymous client holds open, and the connections never take more than
//! the cap (plus the few being closed) of the process's file descriptors.
//!
//! This module never looks at what a request asks for: the per-request limits (host, body,
//! answer time) are the handler's.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use super::refusals::Refusals;
use crate::telemetry::events::HttpRefusal;

/// Largest read buffer of one connection (hyper's default is about 400 KiB); it also caps a
/// request head.
const MAX_BUF: usize = 64 * 1024;

/// Connections beyond the cap that may still be closing before the accept loop waits.
const CLOSING_SLACK: usize = 64;

/// Where a connection is in its current exchange. The order is the shedding order: the
/// first is closed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Phase {
    /// Waiting for a request (just accepted, or after an answer).
    Idle,
    /// Receiving a request head.
    Head,
    /// The head is read; the body is still arriving.
    Body,
    /// The answer is being written to the client.
    Writing,
    /// The request is being answered.
    Handler,
}

/// One open connection, shared by its task, its I/O, its requests and the registry.
#[derive(Debug)]
pub(super) struct Conn {
    state: Mutex<(Phase, Instant)>,
    changed: Notify,
    kill: Notify,
    killed: AtomicBool,
    /// Close with a reset rather than a FIN: a connection cut by a limit leaves nothing
    /// behind in the kernel (no `TIME_WAIT`).
    reset: AtomicBool,
}

impl Conn {
    fn new() -> Self {
        Self {
            state: Mutex::new((Phase::Idle, Instant::now())),
            changed: Notify::new(),
            kill: Notify::new(),
            killed: AtomicBool::new(false),
            reset: AtomicBool::new(false),
        }
    }

    fn get(&self) -> (Phase, Instant) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves to `to` (from `from` only, when given), restarting the phase's clock.
    fn shift(&self, from: Option<Phase>, to: Phase) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.0 != to && from.is_none_or(|f| f == s.0) {
            *s = (to, Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }

    /// Moves to `phase`.
    pub(super) fn set(&self, phase: Phase) {
        self.shift(None, phase);
    }
}

/// The connection deadlines, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tuning {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time to receive a request head once it started.
    pub header_timeout: Duration,
    /// Time to wait for the next request.
    pub idle_timeout: Duration,
    /// Time to write an answer.
    pub write_timeout: Duration,
}

impl Tuning {
    /// When the connection's current phase runs out, and what to count then (`None`: only
    /// an idle connection closing, which is normal).
    fn deadline(&self, (phase, since): (Phase, Instant)) -> Option<(Instant, Option<HttpRefusal>)> {
        match phase {
            Phase::Idle => Some((since + self.idle_timeout, None)),
            Phase::Head => Some((
                since + self.header_timeout,
                Some(HttpRefusal::HeaderTimeout),
            )),
            Phase::Writing => Some((since + self.write_timeout, Some(HttpRefusal::WriteTimeout))),
            // The handler's own limits: body_timeout and request_timeout.
            Phase::Body | Phase::Handler => None,
        }
    }
}

#[derive(Debug, Default)]
struct Open {
    conns: HashMap<u64, Arc<Conn>>,
    /// Told to close, not gone yet.
    closing: usize,
}

/// The open connections.
#[derive(Debug, Default)]
struct Registry {
    open: Mutex<Open>,
    removed: Notify,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, id: u64, conn: Arc<Conn>) {
        self.lock().conns.insert(id, conn);
    }

    fn remove(&self, id: u64) {
        let mut open = self.lock();
        if let Some(c) = open.conns.remove(&id)
            && c.killed.load(Ordering::Relaxed)
        {
            open.closing = open.closing.saturating_sub(1);
        }
        drop(open);
        self.removed.notify_waiters();
    }

    /// (open, not told to close).
    fn counts(&self) -> (usize, usize) {
        let open = self.lock();
        (open.conns.len(), open.conns.len() - open.closing)
    }

    /// Tells the least useful connection to close.
    fn shed(&self) -> bool {
        let mut open = self.lock();
        let victim = open
            .conns
            .values()
            .filter(|c| !c.killed.load(Ordering::Relaxed))
            .min_by_key(|c| c.get())
            .cloned();
        let Some(victim) = victim else {
            return false;
        };
        victim.killed.store(true, Ordering::Relaxed);
        open.closing += 1;
        drop(open);
        victim.kill.notify_one();
        true
    }

    async fn until_empty(&self) {
        loop {
            let removed = self.removed.notified();
            if self.lock().conns.is_empty() {
                return;
            }
            removed.await;
        }
    }

    /// Waits until a connection goes (or a short while passes).
    async fn until_removed(&self) {
        let _ = tokio::time::timeout(Duration::from_millis(50), self.removed.notified()).await;
    }
}

/// Removes its connection from the registry however its task ends.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// A socket that moves its connection from idle to receiving a head when bytes arrive, and
/// is reset when closed if its connection was cut.
struct Tracked {
    stream: TcpStream,
    conn: Arc<Conn>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.conn.reset.load(Ordering::Relaxed) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.shift(Some(Phase::Idle), Phase::Head);
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// An answer's body; when it is dropped (written, or the connection gone) the connection
/// is idle again.
pub(super) struct AnswerBody {
    inner: Body,
    conn: Arc<Conn>,
}

impl Drop for AnswerBody {
    fn drop(&mut self) {
        self.conn.shift(Some(Phase::Writing), Phase::Idle);
    }
}

impl hyper::body::Body for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `listener` until `shutdown` resolves, answering each request with `handle`; then
/// stops accepting, lets the requests in progress finish (within their deadlines) and
/// closes idle connections.
pub(super) async fn serve<H, F>(
    listener: TcpListener,
    tuning: Tuning,
    handle: H,
    refusals: Arc<Refusals>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    H: Fn(Arc<Conn>, hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = axum::response::Response> + Send + 'static,
{
    let registry = Arc::new(Registry::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(refusals.clone().summarize(stop_rx.clone()));
    tokio::pin!(shutdown);
    let mut next_id = 0u64;
    let mut accept_errors = AcceptErrors::default();
    loop {
        // Connections told to close free their descriptors as their tasks run; never hold
        // more than a few of them beyond the cap.
        while registry.counts().0 >= tuning.max_connections + CLOSING_SLACK {
            registry.until_removed().await;
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_errors.failed(&e).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if registry.counts().1 >= tuning.max_connections && registry.shed() {
            refusals.note(HttpRefusal::ConnectionShed);
        }
        let conn = Arc::new(Conn::new());
        let id = next_id;
        next_id += 1;
        registry.add(id, conn.clone());
        let registered = Registered {
            registry: registry.clone(),
            id,
        };
        let task = Connection {
            conn,
            tuning,
            refusals: refusals.clone(),
            stop: stop_rx.clone(),
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            task.run(stream, handle).await;
            drop(registered);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    registry.until_empty().await;
}

/// One connection's task.
struct Connection {
    conn: Arc<Conn>,
    tuning: Tuning,
    refusals: Arc<Refusals>,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run<H, F>(mut self, stream: TcpStream, handle: H)
    where
        H: Fn(Arc<Conn>, hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = axum::response::Response> + Send + 'static,
    {
        let io = TokioIo::new(Tracked {
            stream,
            conn: self.conn.clone(),
        });
        let conn = self.conn.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let conn = conn.clone();
            let answer = handle(conn.clone(), req);
            async move {
                let response = answer.await;
                conn.set(Phase::Writing);
                Ok::<_, Infallible>(response.map(|inner| AnswerBody { inner, conn }))
            }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.keep_alive(true)
            .header_read_timeout(None)
            .max_buf_size(MAX_BUF);
        let served = http.serve_connection(io, service);
        tokio::pin!(served);
        let mut stopping = *self.stop.borrow();
        if stopping {
            served.as_mut().graceful_shutdown();
        }
        loop {
            let deadline = self.tuning.deadline(self.conn.get());
            let expiry = async {
                match deadline {
                    Some((at, _)) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = served.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "HTTP connection ended with an error.");
                    }
                    return;
                }
                () = self.conn.kill.notified() => {
                    self.conn.reset.store(true, Ordering::Relaxed);
                    return;
                }
                () = self.conn.changed.notified() => {}
                () = expiry => {
                    // Still in the phase that ran out?
                    if self.tuning.deadline(self.conn.get()).is_some_and(|(at, _)| at <= Instant::now()) {
                        if let Some((_, Some(reason))) = deadline {
                            self.conn.reset.store(true, Ordering::Relaxed);
                            self.refusals.note(reason);
                        }
                        return;
                    }
                }
                r = self.stop.changed(), if !stopping => {
                    stopping = true;
                    if r.is_ok() {
                        served.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// Accept failures: descriptors exhausted (by git or `SQLite` too) must not spin the loop
/// nor flood the log.
#[derive(Default)]
struct AcceptErrors {
    last_warned: Option<Instant>,
}

impl AcceptErrors {
    async fn failed(&mut self, e: &std::io::Error) {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        if matches!(
            e.kind(),
            ConnectionAborted | ConnectionRefused | ConnectionReset
        ) {
            return;
        }
        if self
            .last_warned
            .is_none_or(|t| t.elapsed() > Duration::from_mins(1))
        {
            self.last_warned = Some(Instant::now());
            tracing::warn!(error = %e, "The HTTP server cannot accept connections (out of file descriptors?); retrying. Lower server.max_connections or raise the open-file limit.");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Raises the process's soft open-file limit to its hard limit, and returns the soft limit
/// then in force (`None` when it cannot be read).
#[cfg(unix)]
pub(super) fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes into the struct we pass, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return None;
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `setrlimit` only reads the struct we pass, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            tracing::info!(
                from = before,
                to = raised.rlim_cur,
                "Raised the open-file limit to its hard limit."
            );
            return Some(raised.rlim_cur);
        }
        tracing::warn!(
            limit = before,
            "Could not raise the open-file limit; server.max_connections is kept well below it."
        );
    }
    Some(before)
}

/// Not on this platform.
#[cfg(not(unix))]
pub(super) fn raise_fd_limit() -> Option<u64> {
    None
}

/// The connection cap in force: the configured one, but never more than half the
/// open-file limit, leaving at least 256 descriptors to git, `SQLite` and the AWS clients.
pub(super) fn connection_cap(configured: usize, fd_limit: Option<u64>) -> usize {
    let Some(limit) = fd_limit else {
        return configured;
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let bound = (limit / 2)
        .min(limit.saturating_sub(256 + CLOSING_SLACK))
        .max(8);
    if configured > bound {
        tracing::warn!(
            configured,
            open_file_limit = limit,
            used = bound,
            "server.max_connections is too close to the open-file limit; using a lower cap so git and the state store keep descriptors. Raise the limit (ulimit -n, LimitNOFILE=) or lower server.max_connections."
        );
        bound
    } else {
        configured
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_to_the_rest() {
        assert_eq!(connection_cap(512, Some(1024)), 512);
        assert_eq!(connection_cap(512, Some(1_048_576)), 512);
        assert_eq!(connection_cap(900, Some(1024)), 512);
        assert_eq!(connection_cap(512, Some(256)), 8);
        assert_eq!(connection_cap(512, None), 512);
    }

    #[test]
    fn idle_connections_are_shed_first_then_the_oldest() {
        let r = Registry::default();
        let a = Arc::new(Conn::new());
        let b = Arc::new(Conn::new());
        let c = Arc::new(Conn::new());
        r.add(1, a.clone());
        r.add(2, b.clone());
        r.add(3, c.clone());
        a.set(Phase::Handler);
        b.set(Phase::Body);
        // c is idle: it goes first, then the body upload, then the handler.
        assert!(r.shed());
        assert!(c.killed.load(Ordering::Relaxed));
        assert_eq!(r.counts(), (3, 2));
        assert!(r.shed());
        assert!(b.killed.load(Ordering::Relaxed));
        assert!(r.shed());
        assert!(a.killed.load(Ordering::Relaxed));
        assert!(!r.shed());
        r.remove(3);
        assert_eq!(r.counts(), (2, 0));
    }

    #[test]
    fn reads_move_only_an_idle_connection_to_head() {
        let c = Conn::new();
        c.shift(Some(Phase::Idle), Phase::Head);
        assert_eq!(c.get().0, Phase::Head);
        c.set(Phase::Handler);
        c.shift(Some(Phase::Idle), Phase::Head);
        assert_eq!(c.get().0, Phase::Handler);
    }
}
