//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`, gzip, zstd or
//! deflate,
//! answered as the OTLP spec says: an `ExportTraceServiceResponse` (with `partial_success`
//! when spans were left out), or a status its exporters act on (`UNAVAILABLE` with
//! `RetryInfo` when a pipeline is full, `INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`,
//! `UNAUTHENTICATED`). The message goes through the same handler as an OTLP/HTTP protobuf
//! body, so both protocols decode, check ids and hand on spans alike.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use gencol_model::budget::{Charge, MemoryBudget};
use http::{Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::Status;
use tonic::body::Body;
use tonic::server::{Grpc, NamedService};
use tower::Service;

use super::service::{Encoding, Handler};
use crate::grpc::codec::RawCodec;
use crate::grpc::guard::Compressed;
use crate::http::{Compression, RESERVE_PATIENCE, Refusal, Reserved, expand, reserve};

/// The service's full name, as clients address it.
const SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// `TraceService` over gRPC.
#[derive(Clone)]
pub(crate) struct TraceService {
    pub handler: Arc<Handler>,
    pub memory: MemoryBudget,
    /// `max_request_body_size`, which bounds a message once inflated too.
    pub max_message: usize,
}

impl NamedService for TraceService {
    const NAME: &'static str = SERVICE;
}

impl Service<Request<Body>> for TraceService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if req.uri().path() != EXPORT_PATH {
            let message = format!("unknown method {}: this receiver serves {EXPORT_PATH}", req.uri().path());
            return Box::pin(async move { Ok(Status::unimplemented(message).into_http()) });
        }
        let export = Export(self.clone());
        // Compressed messages come through still compressed (see `grpc::guard`), so the
        // limit here is on the bytes as sent; they are inflated in `export`.
        let mut grpc = Grpc::new(RawCodec).max_decoding_message_size(self.max_message);
        Box::pin(async move { Ok(grpc.unary(export, req).await) })
    }
}

/// One `Export` call, once tonic has its message.
struct Export(TraceService);

impl Service<tonic::Request<Bytes>> for Export {
    type Response = tonic::Response<Bytes>;
    type Error = Status;
    type Future = BoxFuture<'static, Result<tonic::Response<Bytes>, Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let this = self.0.clone();
        Box::pin(async move {
            let compression = req.extensions().get::<Compressed>().map_or(Compression::None, |c| c.0);
            let bytes = req.into_inner();
            let consumer = this.handler.consumer.clone();
            match this.export(bytes, compression).await {
                Ok(answer) => Ok(tonic::Response::new(answer)),
                Err(refusal) => {
                    if let Some(reason) = crate::refused_reason(refusal.status) {
                        consumer.stats().refused(reason, refusal.records);
                    }
                    Err(crate::grpc::status(&refusal))
                }
            }
        })
    }
}

impl TraceService {
    /// Inflated within the limits, room in every pipeline, then the handler OTLP/HTTP
    /// protobuf bodies go through.
    async fn export(&self, bytes: Bytes, compression: Compression) -> Result<Bytes, Refusal> {
        let mut charge = Charge::new(&self.memory);
        charge.take(bytes.len())?;
        let (bytes, charge) = match compression {
            Compression::None => (bytes, charge),
            // Inflating up to `max_message` bytes is CPU work: off the connection's thread.
            compression => {
                let max = self.max_message;
                tokio::task::spawn_blocking(move || {
                    let expanded = expand(compression, &bytes, max, &mut charge)?;
                    charge.give_back(bytes.len());
                    Ok::<_, Refusal>((expanded, charge))
                })
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "inflating an OTLP/gRPC message failed");
                    Refusal::new(http::StatusCode::INTERNAL_SERVER_ERROR, "internal error while inflating the message")
                })??
            }
        };
        let reservation = reserve(&self.handler.consumer, bytes.len(), RESERVE_PATIENCE).await?;
        let rejected = self.handler.accept(Encoding::Protobuf, Reserved { bytes, charge, reservation }).await?;
        Ok(match rejected {
            None => Bytes::new(),
            partial => ExportTraceServiceResponse { partial_success: partial }.encode_to_vec().into(),
        })
    }
}
