//! The gRPC port: accepts connections (at most `max_connections` open; beyond that new
//! ones wait in the kernel's queue, as gRPC clients keep a few long-lived connections
//! rather than many short ones), completes their TLS handshake on a task of their own when
//! `tls` is set, and hands them to tonic, which serves HTTP/2 until shutdown and then lets
//! requests in flight finish.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use gencol_engine::CancellationToken;
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tonic::body::Body;
use tonic::transport::server::Connected;
use tower::Service;

use crate::http::ReceiverError;
use crate::tls::ServerTls;

/// How a gRPC port treats its connections and streams.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GrpcLimits {
    pub max_connections: usize,
    /// The longest a request may take, from its headers to its answer.
    pub request_timeout: Duration,
}

/// Requests one connection may have in flight at once (HTTP/2 streams).
const MAX_STREAMS: u32 = 64;

/// The largest header block a client may send: far more than metadata ever holds.
const MAX_HEADER_LIST: u32 = 64 * 1024;

/// What tonic serves on one connection.
pub(crate) trait GrpcService:
    Service<Request<Body>, Response = Response<Body>, Error = std::convert::Infallible, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<S> GrpcService for S where
    S: Service<Request<Body>, Response = Response<Body>, Error = std::convert::Infallible, Future: Send>
        + Clone
        + Send
        + 'static
{
}

/// Binds `endpoint` and serves `service` there until `shutdown`. Returns the bound address.
pub(crate) async fn serve<S: GrpcService>(
    endpoint: &str,
    service: S,
    tls: Option<ServerTls>,
    limits: GrpcLimits,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), ReceiverError> {
    let bind_err = |source| ReceiverError::Bind { endpoint: endpoint.to_owned(), source };
    let listener = TcpListener::bind(endpoint).await.map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    // Handshaken connections, on their way to tonic.
    let (ready_tx, ready_rx) = mpsc::channel::<Connection>(64);
    let accepting = tokio::spawn(accept_loop(listener, tls, limits.max_connections, ready_tx, shutdown.clone()));
    let incoming = futures_util::stream::unfold(ready_rx, |mut rx| async move {
        rx.recv().await.map(|conn| (Ok::<_, io::Error>(conn), rx))
    });
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS)
        .http2_max_header_list_size(MAX_HEADER_LIST)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .timeout(limits.request_timeout);
    let task = tokio::spawn(async move {
        let stopped = shutdown.clone().cancelled_owned();
        if let Err(e) = server.serve_with_incoming_shutdown(service, incoming, stopped).await {
            tracing::error!(error = %e, "gRPC server stopped");
        }
        let _ = accepting.await;
    });
    Ok((addr, task))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<ServerTls>,
    max_connections: usize,
    ready: mpsc::Sender<Connection>,
    shutdown: CancellationToken,
) {
    let room = Arc::new(Semaphore::new(max_connections));
    let mut pause = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            permit = room.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    pause = Duration::from_millis(10);
                    a
                }
                Err(e) => {
                    // Out of file descriptors, mostly: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a gRPC connection failed; pausing accepts");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let ready = ready.clone();
        match &tls {
            None => {
                let _ = ready.send(Connection { io: Either::Left(stream), _room: permit }).await;
            }
            // The handshake runs on its own task: a slow client does not hold up others.
            Some(tls) => {
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls.accept(stream).await {
                        Ok(stream) => {
                            let _ = ready.send(Connection { io: Either::Right(Box::new(stream)), _room: permit }).await;
                        }
                        Err(e) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                    }
                });
            }
        }
    }
}

/// An accepted connection, holding its place among `max_connections` until tonic drops it.
pub(crate) struct Connection {
    io: Either<TcpStream, Box<TlsStream<TcpStream>>>,
    _room: OwnedSemaphorePermit,
}

impl Connected for Connection {
    type ConnectInfo = ();

    fn connect_info(&self) {}
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
