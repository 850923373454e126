//! The admin HTTP endpoint: `/metrics` (Prometheus text exposition),
//! `/healthz` (the process is alive and serving) and `/readyz` (probes
//! attached and the pipeline running).
//!
//! With a web configuration file (`[admin] web_config_file`,
//! `--web.config.file`) the endpoint serves TLS and checks basic
//! authentication like a Prometheus exporter; see [`super::webconfig`].

use std::convert::Infallible;
use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::export::metrics::Metrics;
use crate::export::webconfig::{AuthOutcome, WebConfig};

/// Called before each scrape to pull live figures (BPF map counters,
/// pipeline stats) into the metrics. It receives the metrics' mutex rather
/// than a locked guard, so it can take its own locks first: the capture
/// task and the metrics syncer lock the pipeline *before* the metrics
/// (findings are recorded into the metrics while the pipeline is held), and
/// a scrape that held the metrics while waiting for the pipeline would
/// deadlock against them — stalling capture, analysis and the endpoint.
pub type Refresh = Arc<dyn Fn(&Mutex<Metrics>) + Send + Sync>;

/// Shared state of the admin endpoint.
#[derive(Clone)]
pub struct AdminState {
    /// The metrics to expose.
    pub metrics: Arc<Mutex<Metrics>>,
    /// Set once probes are attached and the pipeline runs.
    pub ready: Arc<AtomicBool>,
    /// Refreshes the metrics at scrape time.
    pub refresh: Option<Refresh>,
}

/// Errors starting the admin endpoint.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The listen address could not be bound (in use, no permission).
    #[error(
        "cannot listen on {addr} for /metrics: {source} (choose another with --metrics-listen)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Connections served at once; further ones are closed at accept (a client
/// flooding the endpoint cannot exhaust the agent's file descriptors).
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send a complete request head within this time (slowloris;
/// also closes idle keep-alive connections, which Prometheus reopens).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS handshake must complete within this time.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A response write that makes no progress for this long (a scraper that
/// stopped reading) closes the connection.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection on which nothing was read or written for this long is
/// closed, whether or not a request was started: hyper's header timeout
/// only runs once request bytes arrive, so a client that connects and sends
/// nothing would otherwise hold a connection slot forever.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head buffered per connection.
const MAX_REQUEST_BUFFER: usize = 16 * 1024;

/// Binds the admin endpoint over plain HTTP without authentication;
/// returns the bound address and the serving task.
pub async fn serve(
    addr: SocketAddr,
    state: AdminState,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), AdminError> {
    serve_with(addr, state, None).await
}

/// Binds the admin endpoint with an optional web configuration (TLS,
/// basic authentication, extra headers; see [`WebConfig`]).
///
/// Every connection is served on its own task and `/metrics` is rendered
/// into a buffer before it is written, so neither a slow or stuck scraper
/// nor a flood of connections holds a lock the capture pipeline needs:
/// connections are capped at [`MAX_CONNECTIONS`], request heads must arrive
/// within [`HEADER_READ_TIMEOUT`], TLS handshakes within
/// [`TLS_HANDSHAKE_TIMEOUT`], a write stalled for [`WRITE_STALL_TIMEOUT`]
/// and a connection idle for [`IDLE_TIMEOUT`] end their connection.
pub async fn serve_with(
    addr: SocketAddr,
    state: AdminState,
    web: Option<WebConfig>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), AdminError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| AdminError::Bind { addr, source })?;
    let web = Arc::new(web.unwrap_or(WebConfig {
        tls: None,
        auth: None,
        headers: Vec::new(),
    }));
    let acceptor = web.tls.clone().map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "admin endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "admin endpoint at its connection limit; connection closed");
                drop(stream);
                continue;
            };
            let state = state.clone();
            let web = web.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let io = IoDeadlines::new(stream, WRITE_STALL_TIMEOUT, IDLE_TIMEOUT);
                match acceptor {
                    None => serve_connection(io, state, web).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io)).await
                        {
                            Ok(Ok(tls)) => serve_connection(tls, state, web).await,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "admin TLS handshake failed");
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "admin TLS handshake timed out");
                            }
                        }
                    }
                }
            });
        }
    });
    Ok((local, task))
}

async fn serve_connection<IO>(io: IO, state: AdminState, web: Arc<WebConfig>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let state = state.clone();
        let web = web.clone();
        async move { Ok::<_, Infallible>(respond(&state, &web, &req).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BUFFER);
    if let Err(e) = builder.serve_connection(TokioIo::new(io), svc).await {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

/// Paths answered without authentication: liveness and readiness say
/// nothing about the watched traffic, and Kubernetes probes cannot send
/// credentials without putting them in the pod spec.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/live" | "/readyz" | "/ready")
}

async fn respond(
    state: &AdminState,
    web: &WebConfig,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let mut resp = match &web.auth {
        Some(auth) if !is_probe(req.uri().path()) => {
            match auth
                .check(req.headers().get(hyper::header::AUTHORIZATION))
                .await
            {
                AuthOutcome::Allowed => handle(state, req),
                AuthOutcome::Denied => {
                    let mut r = text(
                        StatusCode::UNAUTHORIZED,
                        "text/plain",
                        "Unauthorized\n".into(),
                    );
                    r.headers_mut().insert(
                        hyper::header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"sessionwatch\""),
                    );
                    r
                }
            }
        }
        _ => handle(state, req),
    };
    for (name, value) in &web.headers {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}

/// Ends a connection whose writes make no progress for a while (a peer
/// that stopped reading would otherwise hold its connection and rendered
/// response forever), or on which nothing at all happens for a while (a
/// peer that connected and sends nothing).
struct IoDeadlines<T> {
    inner: T,
    write_limit: Duration,
    idle_limit: Duration,
    write_stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
}

fn timed_out(what: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what)
}

impl<T> IoDeadlines<T> {
    fn new(inner: T, write_limit: Duration, idle_limit: Duration) -> IoDeadlines<T> {
        IoDeadlines {
            inner,
            write_limit,
            idle_limit,
            write_stalled: None,
            idle: None,
        }
    }

    /// Any progress: both timers start over.
    fn progress(&mut self) {
        self.write_stalled = None;
        self.idle = None;
    }

    /// Maps a pending write-side poll to a timeout error once the stall
    /// lasted `write_limit`.
    fn guard_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        match poll {
            Poll::Ready(r) => {
                self.progress();
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.write_limit;
                let sleep = self
                    .write_stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(timed_out("peer stopped reading"))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for IoDeadlines<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = this.idle_limit;
                let sleep = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(timed_out("connection idle"))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for IoDeadlines<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.guard_write(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.guard_write(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.guard_write(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.guard_write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}

fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            // Not under the metrics lock (see `Refresh`).
            if let Some(refresh) = &state.refresh {
                refresh(&state.metrics);
            }
            let body = match state.metrics.lock() {
                Ok(m) => m.render(),
                Err(_) => {
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        "metrics poisoned\n".into(),
                    );
                }
            };
            text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )
        }
        "/healthz" | "/live" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" | "/ready" => {
            if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready\n".into(),
                )
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}
