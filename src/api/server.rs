//! Serving HTTP/1.1 connections with bounds, so a slow or broken client cannot hold the
//! node: a cap on connections, a time limit on request headers (hyper's), on each request
//! (a middleware, see `super::limit_time`), and on a connection that makes no progress
//! (a client that stops reading its response).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceExt;
use tracing::{debug, warn};

use super::ApiLimits;

/// How long connections get to finish their requests when the server stops.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Accepts connections on `listener` and serves `router` on each until `shutdown`
/// resolves; then waits briefly for requests in progress and drops the rest.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ApiLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // At the cap, stop accepting: the kernel's backlog holds new clients meanwhile.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: back off rather than spin.
                    warn!(error = %e, "API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        connections.spawn(async move {
            serve_connection(stream, router, limits).await;
            debug!(%peer, "API connection closed");
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    let drain = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(STOP_GRACE, drain).await;
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, router: Router, limits: ApiLimits) {
    let _ = stream.set_nodelay(true);
    let progress = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Watched {
        inner: stream,
        progress: progress.clone(),
    });
    let service = hyper::service::service_fn(move |request| {
        router.clone().oneshot(request.map(axum::body::Body::new))
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let connection = http.serve_connection(io, service);
    // Closes a connection that moved no byte for a whole `idle_timeout`: headers and
    // bodies are bounded in time already, but a client can also stop reading its answer.
    let stalled = async {
        let mut seen = 0;
        loop {
            tokio::time::sleep(limits.idle_timeout).await;
            let now = progress.load(Ordering::Relaxed);
            if now == seen {
                return;
            }
            seen = now;
        }
    };
    tokio::select! {
        result = connection => if let Err(e) = result {
            debug!(error = %e, "API connection ended with an error");
        },
        () = stalled => debug!("API connection closed: no progress"),
    }
}

/// A stream that counts reads and writes that moved bytes.
struct Watched {
    inner: TcpStream,
    progress: Arc<AtomicU64>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.progress.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.progress.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.progress.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
