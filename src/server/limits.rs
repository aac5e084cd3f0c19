//! The per-request limits, applied before the router sees a request: the `Host` check (DNS
//! rebinding), the body size and the bytes of bodies held across all connections, the time
//! to receive a body, and the time to answer.
//!
//! A declared `Content-Length` over the limits is refused before a byte of the body is
//! read; a chunked body is counted as it streams and cut as soon as it goes over. Bytes are
//! counted against `server.max_inflight_body_bytes` as they arrive and given back when the
//! request is answered, so bodies never hold more memory than that, whoever sends them.
//! This module never looks at what a request asks for: authentication is the handlers'.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::service::TowerToHyperService;

use super::conn::{Conn, Phase};
use super::refusals::Refusals;
use crate::config::split_host_port;
use crate::telemetry::events::HttpRefusal;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Request body bytes held across all connections.
#[derive(Debug)]
pub(super) struct Budget {
    max: u64,
    used: AtomicU64,
}

impl Budget {
    pub(super) fn new(max: u64) -> Self {
        Self {
            max,
            used: AtomicU64::new(0),
        }
    }

    fn take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.max)
            })
            .is_ok()
    }

    fn give(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    fn available(&self) -> u64 {
        self.max.saturating_sub(self.used.load(Ordering::Acquire))
    }
}

/// Why a request body was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    TooLarge,
    OverBudget,
    TimedOut,
}

/// One request's share of the budget, given back when both its body and its answer are done.
struct Held {
    budget: Arc<Budget>,
    bytes: AtomicU64,
    cut: OnceLock<Cut>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.give(*self.bytes.get_mut());
    }
}

#[derive(Debug)]
struct BodyCut(Cut);

impl std::fmt::Display for BodyCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Cut::TooLarge => "the request body is larger than server.max_body_bytes",
            Cut::OverBudget => "request bodies in flight exceed server.max_inflight_body_bytes",
            Cut::TimedOut => "the request body did not arrive within server.body_timeout",
        })
    }
}

impl StdError for BodyCut {}

/// A request body under the limits.
struct LimitedBody {
    inner: Incoming,
    held: Arc<Held>,
    conn: Arc<Conn>,
    received: u64,
    max: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl LimitedBody {
    fn cut(&mut self, cut: Cut) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        let _ = self.held.cut.set(cut);
        Poll::Ready(Some(Err(Box::new(BodyCut(cut)))))
    }
}

impl hyper::body::Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                this.received += n;
                if this.received > this.max {
                    return this.cut(Cut::TooLarge);
                }
                if !this.held.budget.take(n) {
                    return this.cut(Cut::OverBudget);
                }
                this.held.bytes.fetch_add(n, Ordering::AcqRel);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.done = true;
                this.conn.set(Phase::Handler);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    return this.cut(Cut::TimedOut);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The `Host` names the server answers to.
#[derive(Debug, Clone)]
pub(super) struct Hosts {
    listen: SocketAddr,
    any: bool,
    names: Vec<(String, Option<u16>)>,
}

impl Hosts {
    /// For a server listening on `listen` with `server.allowed_hosts`.
    pub(super) fn new(listen: SocketAddr, allowed: &[String]) -> Self {
        Self {
            listen,
            any: allowed.iter().any(|h| h == "*"),
            names: allowed.iter().filter_map(|h| split_host_port(h)).collect(),
        }
    }

    /// Whether a request with this `Host` (or none) is answered.
    pub(super) fn allows(&self, host: Option<&str>) -> bool {
        // Without a Host the client is not a browser, so it is no rebinding.
        let Some(host) = host else {
            return true;
        };
        if self.any {
            return true;
        }
        let Some((name, port)) = split_host_port(host) else {
            return false;
        };
        let port_or_80 = port.unwrap_or(80);
        if self
            .names
            .iter()
            .any(|(n, p)| *n == name && p.is_none_or(|p| p == port_or_80))
        {
            return true;
        }
        let ip = name.parse::<IpAddr>().ok();
        if self.listen.ip().is_loopback() {
            let loopback = name == "localhost" || ip.is_some_and(|ip| ip.is_loopback());
            loopback && port_or_80 == self.listen.port()
        } else {
            // A browser sends an address as Host only when the page's origin is that
            // address: rebinding needs a name.
            self.names.is_empty() || ip.is_some()
        }
    }

    fn refusal(&self, host: &str) -> Response {
        let answered = if self.listen.ip().is_loopback() {
            "localhost, loopback addresses with its port"
        } else {
            "IP addresses"
        };
        super::error(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host {host:?} is not served here: protond on {} answers only to {answered} and the names in server.allowed_hosts (DNS-rebinding protection); if this name is yours, add it to server.allowed_hosts",
                self.listen
            ),
        )
    }
}

/// The per-request limits around the router.
pub(super) struct Limits {
    pub(super) router: TowerToHyperService<Router>,
    pub(super) hosts: Hosts,
    pub(super) budget: Arc<Budget>,
    pub(super) refusals: Arc<Refusals>,
    pub(super) max_body: u64,
    pub(super) body_timeout: Duration,
    pub(super) request_timeout: Duration,
}

impl Limits {
    /// Answers one request, within the limits.
    pub(super) async fn answer(
        self: Arc<Self>,
        conn: Arc<Conn>,
        req: hyper::Request<Incoming>,
    ) -> Response {
        use hyper::body::Body as _;
        conn.set(if req.body().is_end_stream() {
            Phase::Handler
        } else {
            Phase::Body
        });
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(ToString::to_string));
        if !self.hosts.allows(host.as_deref()) {
            self.refusals.note(HttpRefusal::Host);
            return self.hosts.refusal(host.as_deref().unwrap_or_default());
        }
        if let Some(r) = self.declared_length(&req) {
            return r;
        }
        let held = Arc::new(Held {
            budget: self.budget.clone(),
            bytes: AtomicU64::new(0),
            cut: OnceLock::new(),
        });
        let req = req.map(|inner| {
            Body::new(LimitedBody {
                inner,
                held: held.clone(),
                conn: conn.clone(),
                received: 0,
                max: self.max_body,
                deadline: Box::pin(tokio::time::sleep(self.body_timeout)),
                done: false,
            })
        });
        let answer = hyper::service::Service::call(&self.router, req);
        let response = match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(never)) => match never {},
            Err(_) => {
                self.refusals.note(HttpRefusal::RequestTimeout);
                return super::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the request was not answered within server.request_timeout ({})",
                        humantime::format_duration(self.request_timeout)
                    ),
                );
            }
        };
        match held.cut.get() {
            None => response,
            Some(cut) => self.cut_response(*cut),
        }
    }

    /// Refuses a declared body over the limits before reading any of it.
    fn declared_length(&self, req: &hyper::Request<Incoming>) -> Option<Response> {
        let len = req
            .headers()
            .get(header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()?;
        if len > self.max_body {
            self.refusals.note(HttpRefusal::BodyTooLarge);
            return Some(super::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body of {len} bytes is larger than server.max_body_bytes ({}); nothing was read",
                    self.max_body
                ),
            ));
        }
        if len > self.budget.available() {
            self.refusals.note(HttpRefusal::BodyBudget);
            return Some(self.busy());
        }
        None
    }

    fn busy(&self) -> Response {
        let mut r = super::error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the server is already receiving as many request body bytes as server.max_inflight_body_bytes ({}) allows; retry shortly",
                self.budget.max
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        r
    }

    fn cut_response(&self, cut: Cut) -> Response {
        match cut {
            Cut::TooLarge => {
                self.refusals.note(HttpRefusal::BodyTooLarge);
                super::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body is larger than server.max_body_bytes ({}); it was cut off",
                        self.max_body
                    ),
                )
            }
            Cut::OverBudget => {
                self.refusals.note(HttpRefusal::BodyBudget);
                self.busy()
            }
            Cut::TimedOut => {
                self.refusals.note(HttpRefusal::BodyTimeout);
                super::error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within server.body_timeout ({})",
                        humantime::format_duration(self.body_timeout)
                    ),
                )
            }
        }
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_never_goes_over() {
        let b = Budget::new(100);
        assert!(b.take(60));
        assert!(!b.take(41));
        assert!(b.take(40));
        assert_eq!(b.available(), 0);
        b.give(60);
        assert_eq!(b.available(), 60);
    }

    #[test]
    fn loopback_answers_loopback_names_on_its_port_and_the_allowed_ones() {
        let h = Hosts::new(
            "127.0.0.1:8080".parse().expect("addr"),
            &["protond.corp".into()],
        );
        for ok in [
            None,
            Some("127.0.0.1:8080"),
            Some("localhost:8080"),
            Some("LOCALHOST:8080"),
            Some("127.0.0.2:8080"),
            Some("[::1]:8080"),
            Some("protond.corp"),
            Some("protond.corp:443"),
        ] {
            assert!(h.allows(ok), "{ok:?}");
        }
        for refused in [
            "evil.example:8080",
            "evil.example",
            "localhost:9090",
            "localhost",
            "10.0.0.1:8080",
            "127.0.0.1.evil.example:8080",
            "",
            "a b",
        ] {
            assert!(!h.allows(Some(refused)), "{refused}");
        }
        let h = Hosts::new(
            "127.0.0.1:8080".parse().expect("addr"),
            &["protond.corp:8443".into()],
        );
        assert!(h.allows(Some("protond.corp:8443")));
        assert!(!h.allows(Some("protond.corp:8080")));
        let h = Hosts::new("127.0.0.1:8080".parse().expect("addr"), &["*".into()]);
        assert!(h.allows(Some("anything.example")));
    }

    #[test]
    fn other_addresses_check_names_only_when_configured() {
        let open = Hosts::new("0.0.0.0:8080".parse().expect("addr"), &[]);
        assert!(open.allows(Some("evil.example")));
        let listed = Hosts::new(
            "0.0.0.0:8080".parse().expect("addr"),
            &["protond.corp".into()],
        );
        assert!(listed.allows(Some("protond.corp")));
        assert!(listed.allows(Some("10.1.2.3:8080")));
        assert!(!listed.allows(Some("evil.example")));
    }
}
