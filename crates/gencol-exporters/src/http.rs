//! OTLP/HTTP sending shared by every exporter that speaks it (OTLP, and later Ramp):
//! encoding, gzip, headers, and the OTLP spec's answer classification.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use flate2::Compression as GzLevel;
use flate2::write::GzEncoder;
use gencol_engine::ExportError;
use gencol_model::SpanItem;
use gencol_model::otlp;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// How an OTLP/HTTP destination is reached.
#[derive(Clone, Debug)]
pub struct OtlpHttpSettings {
    pub endpoint: reqwest::Url,
    /// Sent with every request; values are secrets and never logged.
    pub headers: Vec<(String, String)>,
    pub protobuf: bool,
    pub gzip: bool,
}

/// Sends OTLP export requests to one endpoint over a pooled keep-alive client.
pub struct OtlpHttpSender {
    client: reqwest::Client,
    endpoint: reqwest::Url,
    headers: HeaderMap,
    protobuf: bool,
    gzip: bool,
    exporter: String,
}

/// Checks header names and values without revealing the values in messages.
pub fn check_headers(headers: &[(String, String)]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("header name `{k}` is not a valid HTTP header name"))?;
        let mut value = HeaderValue::from_str(v).map_err(|_| {
            format!("the value of header `{k}` is not a valid HTTP header value (it must be visible ASCII)")
        })?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

impl OtlpHttpSender {
    pub fn new(exporter: &str, s: &OtlpHttpSettings) -> Result<Self, String> {
        let headers = check_headers(&s.headers)?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("gencol/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot create HTTP client: {e}"))?;
        Ok(OtlpHttpSender {
            client,
            endpoint: s.endpoint.clone(),
            headers,
            protobuf: s.protobuf,
            gzip: s.gzip,
            exporter: exporter.to_owned(),
        })
    }

    /// Encodes and sends a batch of spans once.
    pub async fn send_items(&self, batch: &[SpanItem]) -> Result<(), ExportError> {
        self.send(&otlp::to_request(batch), false).await.map(|_| ())
    }

    /// Encodes and sends one request once. `test` marks it `X-Test-Connection: true`.
    /// Returns the status line on success.
    pub async fn send(&self, req: &ExportTraceServiceRequest, test: bool) -> Result<String, ExportError> {
        let body = if self.protobuf { otlp::encode_proto(req) } else { otlp::encode_json(req) };
        let body = if self.gzip { gzip(&body) } else { body };
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .headers(self.headers.clone())
            .header("content-type", if self.protobuf { "application/x-protobuf" } else { "application/json" });
        if self.gzip {
            request = request.header("content-encoding", "gzip");
        }
        if test {
            request = request.header("x-test-connection", "true");
        }
        let response = request.body(Bytes::from(body)).send().await.map_err(|e| {
            // reqwest errors name the URL, never headers; keep the chain short.
            ExportError::retryable(format!("cannot reach {}: {}", self.endpoint, error_chain(&e)))
        })?;
        let status = response.status();
        let retry_after =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let body = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            self.log_partial_success(&content_type, &body);
            return Ok(format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("")).trim().to_owned());
        }
        let message = format!("{} answered {}: {}", self.endpoint, status.as_u16(), excerpt(&body));
        match status.as_u16() {
            429 | 502 | 503 | 504 => Err(ExportError::Retryable { message, retry_after }),
            _ => Err(ExportError::permanent(message)),
        }
    }

    /// A 200 may still say some spans were rejected; that is logged, never retried.
    fn log_partial_success(&self, content_type: &str, body: &[u8]) {
        if body.is_empty() {
            return;
        }
        let parsed = if content_type.starts_with("application/x-protobuf") {
            ExportTraceServiceResponse::decode(body).ok()
        } else {
            serde_json::from_slice::<ExportTraceServiceResponse>(body).ok()
        };
        if let Some(p) = parsed.and_then(|r| r.partial_success)
            && (p.rejected_spans > 0 || !p.error_message.is_empty())
        {
            tracing::warn!(exporter = %self.exporter, rejected_spans = p.rejected_spans, "destination accepted the batch partially: {}", p.error_message);
        }
    }
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), GzLevel::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate_parse(v.trim())?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

fn httpdate_parse(v: &str) -> Option<std::time::SystemTime> {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let t = time::PrimitiveDateTime::parse(v, &fmt).ok()?.assume_utc();
    Some(std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.unix_timestamp()).ok()?))
}

/// The start of a response body, as text, for error messages.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]).trim().replace('\n', " ");
    if text.is_empty() {
        "(empty body)".into()
    } else if body.len() > 512 {
        format!("{text}…")
    } else {
        text
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn header_errors_never_show_values() {
        let err = check_headers(&[("Authorization".into(), "Bearer sec\nret".into())]).unwrap_err();
        assert!(!err.contains("sec"), "{err}");
    }
}
