//! The admin HTTP endpoint: `/metrics` (Prometheus text exposition),
//! `/healthz` (the process is alive and serving) and `/readyz` (probes
//! attached and the pipeline running).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::export::metrics::Metrics;

/// Called before each scrape to pull live figures (BPF map counters,
/// pipeline stats) into the metrics.
pub type Refresh = Arc<dyn Fn(&mut Metrics) + Send + Sync>;

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

/// Binds the admin endpoint; returns the bound address and the serving task.
pub async fn serve(
    addr: SocketAddr,
    state: AdminState,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), AdminError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| AdminError::Bind { addr, source })?;
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "admin endpoint accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, &req)) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    tracing::debug!(error = %e, "admin connection ended with an error");
                }
            });
        }
    });
    Ok((local, task))
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
            let body = match state.metrics.lock() {
                Ok(mut m) => {
                    if let Some(refresh) = &state.refresh {
                        refresh(&mut m);
                    }
                    m.render()
                }
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
