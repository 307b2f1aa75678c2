//! The plain-HTTP port: the Open Inference Protocol's REST routes ([`super::v2::rest`]) and
//! `GET /metrics` (Prometheus text), for clients and scrapers that do not speak gRPC. With a
//! shared token `/metrics` asks for it as the gRPC calls do (`Authorization: Bearer TOKEN`;
//! Prometheus' `authorization` scrape setting), else 401.

use std::net::SocketAddr;
use std::sync::Arc;
#[cfg(test)]
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::middleware::bearer_matches;

use crate::serve::error::{ServeError, ServeResult};
use crate::serve::metrics::Metrics;

/// `GET /metrics` (Prometheus text) for requests that carry `token` when there is one.
pub(super) fn metrics_route(metrics: Arc<Metrics>, token: Option<Arc<[u8]>>) -> Router {
    let render = move |headers: HeaderMap| {
        let allowed = token
            .as_deref()
            .is_none_or(|t| bearer_matches(t, headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())));
        let response = if allowed {
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                metrics.render(),
            )
                .into_response()
        } else {
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "the shared token is required: Authorization: Bearer TOKEN\n",
            )
                .into_response()
        };
        async move { response }
    };
    Router::new().route("/metrics", get(render))
}

/// Serves `app` over plain HTTP/1.1 on `addr` until `shutdown` resolves, then finishes the
/// requests in flight. Returns the bound address (port 0 picks a free one) and the server task.
pub(super) async fn serve_http(
    addr: SocketAddr,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> ServeResult<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Setup(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(|e| ServeError::Setup(e.to_string()))?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::warn!("the HTTP endpoint on {local} stopped: {e}");
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn http_get(addr: SocketAddr, path: &str) -> String {
        http_get_with(addr, path, "").await
    }

    async fn http_get_with(addr: SocketAddr, path: &str, headers: &str) -> String {
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        sock.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn metrics_path_serves_prometheus_text_and_others_are_404() {
        let metrics = Arc::new(Metrics::new("edge"));
        metrics.request("classify", "OK", Duration::from_millis(3));
        let serve = |token| {
            let app = metrics_route(metrics.clone(), token);
            serve_http("127.0.0.1:0".parse().unwrap(), app, std::future::pending())
        };
        let (addr, _) = serve(None).await.unwrap();
        let ok = http_get(addr, "/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        assert!(ok.contains("earlyexit_requests_total"), "{ok}");
        assert!(ok.contains("tier=\"edge\""), "{ok}");
        let missing = http_get(addr, "/other").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        // With a shared token, the scrape needs it too.
        let token: Arc<[u8]> = Arc::from(&b"s3cret"[..]);
        let (addr, _) = serve(Some(token)).await.unwrap();
        for (header, status) in [
            ("", "401"),
            ("Authorization: Bearer guess\r\n", "401"),
            ("Authorization: Bearer s3cret\r\n", "200"),
        ] {
            let got = http_get_with(addr, "/metrics", header).await;
            assert!(got.starts_with(&format!("HTTP/1.1 {status}")), "{header:?}: {got}");
            assert_eq!(got.contains("earlyexit_requests_total"), status == "200", "{got}");
        }
    }
}
