//! OTLP/gRPC sending (`protocol: grpc`): `TraceService/Export` over HTTP/2 with tonic, gzip
//! by default, headers as metadata, `tls` with rustls (the platform's roots plus
//! `ca_file`, a client certificate, or no verification at all).
//!
//! Failures are classified as the OTLP spec says for gRPC: `CANCELLED`,
//! `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`, `UNAVAILABLE` and `DATA_LOSS` are
//! retried, `RESOURCE_EXHAUSTED` only when the server sent `RetryInfo` (whose delay is
//! honoured); `INVALID_ARGUMENT` refuses what the batch holds (the engine splits it); the
//! rest is permanent. Messages follow the HTTP sender's shape, with the endpoint and every
//! text from the server masked of the exporter's secrets.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use gencol_engine::secrets::header_secrets;
use gencol_engine::{ExportError, SecretMask};
use gencol_model::SpanItem;
use gencol_model::otlp;
use http::Uri;
use http::uri::PathAndQuery;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig};
use tokio_util::either::Either;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::http::{ClientTls, Destination, EXCERPT_BYTES, error_chain, log_partial_success, redacted_url};

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// How an OTLP/gRPC destination is reached.
#[derive(Clone)]
pub struct OtlpGrpcSettings {
    /// `http://` (plain HTTP/2) or `https://` (TLS) with host and port, no path.
    pub endpoint: reqwest::Url,
    /// Sent as metadata with every call; values are secrets and never logged.
    pub headers: Vec<(String, String)>,
    pub gzip: bool,
    pub tls: ClientTls,
}

impl OtlpGrpcSettings {
    /// `host:port` the endpoint reaches, to detect a loop back into gencol's own receivers.
    pub fn target_addr(&self) -> Option<String> {
        let u = &self.endpoint;
        Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?))
    }
}

/// Metadata names and values, checked at config load without showing the values.
pub fn check_metadata(headers: &[(String, String)]) -> Result<MetadataMap, String> {
    let mut map = MetadataMap::new();
    for (k, v) in headers {
        let name = k.to_ascii_lowercase();
        let key = MetadataKey::from_bytes(name.as_bytes())
            .map_err(|_| format!("header name `{k}` is not a valid gRPC metadata name"))?;
        if name.ends_with("-bin") {
            return Err(format!("header `{k}`: binary metadata (`-bin`) is not supported; use a text header"));
        }
        let value = MetadataValue::try_from(v.as_str()).map_err(|_| {
            format!("the value of header `{k}` is not a valid gRPC metadata value (it must be visible ASCII)")
        })?;
        map.insert(key, value);
    }
    Ok(map)
}

/// Sends OTLP export requests over one HTTP/2 channel (connected at first use, and again
/// by tonic whenever it drops).
pub struct OtlpGrpcSender {
    settings: OtlpGrpcSettings,
    metadata: MetadataMap,
    destination: Destination,
    exporter: String,
    channel: OnceCell<Channel>,
}

impl OtlpGrpcSender {
    pub fn new(exporter: &str, settings: &OtlpGrpcSettings) -> Result<Self, String> {
        let metadata = check_metadata(&settings.headers)?;
        let secrets = settings.headers.iter().flat_map(|(_, value)| header_secrets(value));
        // Built now so that a certificate rustls refuses is an error at start, not at send.
        client_config(&settings.tls)?;
        Ok(OtlpGrpcSender {
            metadata,
            destination: Destination::new(settings.endpoint.clone(), "endpoint", secrets),
            exporter: exporter.to_owned(),
            settings: settings.clone(),
            channel: OnceCell::new(),
        })
    }

    /// The channel; made on first use, inside the runtime tonic needs for it.
    async fn channel(&self) -> Result<Channel, ExportError> {
        self.channel
            .get_or_try_init(|| async {
                let uri: Uri = self.settings.endpoint.as_str().parse().map_err(|e| {
                    ExportError::permanent(format!("endpoint is not a URI: {e} (from {})", self.destination.shown))
                })?;
                let tls = match self.settings.endpoint.scheme() {
                    "https" => Some(Arc::new(client_config(&self.settings.tls).map_err(ExportError::permanent)?)),
                    _ => None,
                };
                let endpoint = Endpoint::from(uri)
                    .connect_timeout(Duration::from_secs(5))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_timeout(Duration::from_secs(10))
                    .user_agent(concat!("gencol/", env!("CARGO_PKG_VERSION")))
                    .map_err(|e| ExportError::permanent(format!("invalid user agent: {e}")))?;
                Ok(endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: Uri| connect(uri, tls.clone()))))
            })
            .await
            .cloned()
    }

    /// Encodes and sends a batch once.
    pub async fn send_items(&self, batch: &[SpanItem]) -> Result<(), ExportError> {
        self.send_encoded(otlp::encode_items_proto(batch).into(), false).await.map(|_| ())
    }

    /// Sends one request once; `test` adds `x-test-connection: true`. Returns `OK` on success.
    pub async fn send(&self, req: &ExportTraceServiceRequest, test: bool) -> Result<String, ExportError> {
        self.send_encoded(req.encode_to_vec().into(), test).await
    }

    async fn send_encoded(&self, body: Bytes, test: bool) -> Result<String, ExportError> {
        let mut grpc = tonic::client::Grpc::new(self.channel().await?);
        if self.settings.gzip {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        grpc = grpc.accept_compressed(CompressionEncoding::Gzip);
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.metadata.clone();
        if test {
            request.metadata_mut().insert("x-test-connection", MetadataValue::from_static("true"));
        }
        let answer = async {
            grpc.ready().await.map_err(|e| Status::unavailable(error_chain(&e)))?;
            grpc.unary(request, PathAndQuery::from_static(EXPORT), ExportCodec).await
        };
        match answer.await {
            Ok(response) => {
                if let Some(p) = response.into_inner().partial_success
                    && (p.rejected_spans != 0 || !p.error_message.is_empty())
                {
                    log_partial_success(&self.exporter, &self.destination.mask, p.rejected_spans, &p.error_message);
                }
                Ok("OK".to_owned())
            }
            Err(status) => Err(classify(&status, &self.destination.shown, &self.destination.mask)),
        }
    }
}

/// A gRPC status as an export error; see the module docs.
fn classify(status: &Status, shown: &str, mask: &SecretMask) -> ExportError {
    let code = status.code();
    let mut text = status.message().to_owned();
    if let Some(source) = std::error::Error::source(status) {
        text = if text.is_empty() { error_chain(source) } else { format!("{text}: {}", error_chain(source)) };
    }
    let text = mask.excerpt(&text, EXCERPT_BYTES);
    let message = format!("{} {text} (from {shown})", code_name(code));
    let retry_after = status.get_details_retry_info().and_then(|r| r.retry_delay);
    match code {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => ExportError::Retryable { message, retry_after },
        Code::ResourceExhausted if retry_after.is_some() => ExportError::Retryable { message, retry_after },
        Code::InvalidArgument | Code::ResourceExhausted => ExportError::refused(message),
        _ => ExportError::permanent(message),
    }
}

/// The code as gRPC writes it (`UNAVAILABLE`).
fn code_name(code: Code) -> String {
    let words = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in words.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The rustls client side of `tls`: the platform's roots and `ca_file`, a client
/// certificate, or (`insecure_skip_verify`) none; HTTP/2 offered by ALPN.
fn client_config(tls: &ClientTls) -> Result<ClientConfig, String> {
    let pem = &tls.pem;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let builder = if pem.insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let extra = match &pem.ca {
            None => Vec::new(),
            Some(ca) => CertificateDer::pem_slice_iter(ca)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls.ca_file: {e}"))?,
        };
        let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider)
            .map_err(|e| format!("tls: cannot use the system's trusted certificates: {e}"))?;
        builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier))
    };
    let mut config = match &pem.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls.cert_file: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("tls.key_file: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("tls.cert_file and tls.key_file: {e}"))?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Opens a connection for tonic: TCP, then TLS for `https://`.
async fn connect(
    uri: Uri,
    tls: Option<Arc<ClientConfig>>,
) -> Result<TokioIo<Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>>, std::io::Error> {
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_owned());
    let host = uri.host().ok_or_else(|| invalid("the endpoint has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let Some(config) = tls else { return Ok(TokioIo::new(Either::Left(tcp))) };
    let name = ServerName::try_from(host).map_err(|_| invalid("the endpoint's host is not a valid TLS server name"))?;
    let stream = TlsConnector::from(config).connect(name, tcp).await?;
    Ok(TokioIo::new(Either::Right(stream)))
}

/// Accepts any certificate: `tls.insecure_skip_verify`, for tests (a warning is logged at
/// load). Signatures are still checked, so the handshake is a real one.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Sends the request as encoded bytes (borrowed from the batch's encoding, no second
/// copy) and reads the answer as an `ExportTraceServiceResponse`.
#[derive(Clone, Copy, Default)]
struct ExportCodec;

impl Codec for ExportCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = ExportCodec;
    type Decoder = ExportCodec;

    fn encoder(&mut self) -> ExportCodec {
        ExportCodec
    }

    fn decoder(&mut self) -> ExportCodec {
        ExportCodec
    }
}

impl Encoder for ExportCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for ExportCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ExportTraceServiceResponse>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        // A server that answers OK with something else still took the batch.
        Ok(Some(ExportTraceServiceResponse::decode(bytes).unwrap_or_default()))
    }
}

/// Hand-written so that a stray `{:?}` can never print a header value (a credential).
impl std::fmt::Debug for OtlpGrpcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("OtlpGrpcSettings")
            .field("endpoint", &redacted_url(&self.endpoint))
            .field("headers", &headers)
            .field("gzip", &self.gzip)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_are_classified_as_the_otlp_spec_says() {
        let mask = SecretMask::new(vec!["s3cret".to_owned()]);
        let at = "http://127.0.0.1:4317/";
        let class = |s: Status| match classify(&s, at, &mask) {
            ExportError::Retryable { retry_after, .. } => format!("retry {retry_after:?}"),
            ExportError::Refused { .. } => "refused".into(),
            ExportError::Permanent { .. } => "permanent".into(),
        };
        for code in [
            Code::Unavailable,
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::DataLoss,
        ] {
            assert_eq!(class(Status::new(code, "x")), "retry None", "{code:?}");
        }
        let delay = Some(Duration::from_secs(7));
        let with_info = Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            tonic_types::ErrorDetails::with_retry_info(delay),
        );
        assert_eq!(class(with_info), "retry Some(7s)");
        assert_eq!(class(Status::resource_exhausted("too big")), "refused");
        assert_eq!(class(Status::invalid_argument("bad")), "refused");
        assert_eq!(class(Status::unauthenticated("no")), "permanent");
        assert_eq!(class(Status::permission_denied("no")), "permanent");
        assert_eq!(class(Status::unimplemented("no")), "permanent");

        let e = classify(&Status::unauthenticated("token s3cret is wrong"), at, &mask);
        let text = e.to_string();
        assert!(text.starts_with("UNAUTHENTICATED token"), "{text}");
        assert!(!text.contains("s3cret") && text.ends_with("(from http://127.0.0.1:4317/)"), "{text}");
    }

    #[test]
    fn metadata_is_checked_without_showing_values() {
        assert!(check_metadata(&[("Authorization".into(), "Bearer x".into())]).is_ok());
        let e = check_metadata(&[("x-key".into(), "bad\nvalue-s3cret".into())]).expect_err("newline");
        assert!(!e.contains("s3cret"), "{e}");
        assert!(check_metadata(&[("x-key-bin".into(), "x".into())]).is_err());
        assert!(check_metadata(&[("bad name".into(), "x".into())]).is_err());
    }
}
