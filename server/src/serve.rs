//! The accept loop. `axum::serve` has no header-read timeout, no connection limit and a fixed
//! backlog; this is the same hyper server with those three set from `[limits]`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Binds `addr` with the configured listen backlog.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Raises the open-file soft limit to the hard limit: each clinician holds a browser
/// connection and, while their history loads, connections to the EHR and the plan. A 1,024
/// default runs out long before the other limits do.
pub fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the open connections
/// finish (bounded). Each request carries `ConnectInfo<SocketAddr>` (the launch rate limit is
/// per client address).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let max = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max));
    tokio::pin!(shutdown);
    loop {
        // At the limit, connections wait in the backlog instead of being accepted.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: wait a moment instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(request.map(axum::body::Body::new))
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            builder.http2().timer(TokioTimer::new());
            if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    // Stopping: no new connections; requests in progress (a write-back, say) may finish. Idle
    // keep-alive connections end within the header-read timeout; give up after twice that.
    drop(listener);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let drained = permits.acquire_many(all);
    if tokio::time::timeout(limits.header_read_timeout * 2 + Duration::from_secs(5), drained)
        .await
        .is_err()
    {
        tracing::warn!("stopped with requests still in progress");
    }
}
