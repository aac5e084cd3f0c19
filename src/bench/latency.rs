//! The latency proxy of `protond bench --deploy-latency`: an HTTP proxy on 127.0.0.1 that
//! holds every request for a fixed delay before forwarding it to the `moto_server` behind
//! it, so that the deployment figures show what protond's concurrent deployments buy where
//! the endpoint has real latency (a `moto_server` on the same machine answers in about a
//! millisecond). It must never listen anywhere but 127.0.0.1, nor forward anywhere but the
//! one upstream URL it was given.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

/// A running proxy on its own thread and runtime; dropping it stops both.
pub struct LatencyProxy {
    /// `http://127.0.0.1:PORT`, to use as the endpoint instead of the upstream.
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What every request needs: where it goes, the client forwarding it, and the delay.
struct Upstream {
    url: String,
    client: reqwest::Client,
    delay: Duration,
}

async fn forward(
    axum::extract::State(up): axum::extract::State<Arc<Upstream>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    tokio::time::sleep(up.delay).await;
    let url = format!(
        "{}{}",
        up.url,
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut req = up.client.request(method, url).body(body);
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let content_type = resp.headers().get("content-type").cloned();
            let bytes = resp.bytes().await.unwrap_or_default();
            let mut out = (status, bytes).into_response();
            if let Some(ct) = content_type {
                out.headers_mut().insert("content-type", ct);
            }
            out
        }
        Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

impl LatencyProxy {
    /// Starts a proxy on a free 127.0.0.1 port forwarding to `upstream` (a
    /// `http://127.0.0.1:PORT` URL) after `delay` per request.
    ///
    /// # Errors
    ///
    /// When the port cannot be bound or the runtime cannot start.
    pub fn start(upstream: &str, delay: Duration) -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .context("the latency proxy cannot bind 127.0.0.1")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let up = Arc::new(Upstream {
            url: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            delay,
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("the latency proxy cannot start its runtime")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = axum::Router::new().fallback(forward).with_state(up);
                // Stopping drops the runtime, and with it every connection still open (the
                // SDK keeps idle ones).
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
        });
        Ok(Self {
            url,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
