//! Reading a request body within its limits: size (before and after gzip), time (idle
//! and in total) and memory. Every byte held is first taken from the process-wide
//! [`MemoryBudget`] through the request's [`Charge`], which the receiver keeps until it
//! lets go of what it decoded; a sender that stalls is cut off instead of holding its
//! connection and its half body forever.

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use gencol_model::budget::{Charge, Exceeded, MemoryBudget};
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

/// What a receiver allows one request's body.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct BodyLimits {
    /// `max_request_body_size`: bytes as received, and again once decompressed.
    pub max_body: usize,
    /// `read_timeout`: the whole body, counted from the end of the headers.
    pub read_timeout: Duration,
    /// `read_idle_timeout`: the longest pause while the body arrives.
    pub read_idle_timeout: Duration,
}

/// `Content-Type` without parameters (`; charset=utf-8`), lower-cased; `None` when
/// absent; `Some("")` when not readable as text.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?;
    let text = value.to_str().unwrap_or("");
    Some(text.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// How the body is compressed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Compression {
    None,
    Gzip,
}

/// `Content-Encoding`; `Err` carries the encoding we do not support.
pub(crate) fn compression(headers: &HeaderMap) -> Result<Compression, String> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(Compression::None);
    };
    let text = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match text.as_str() {
        "" | "identity" => Ok(Compression::None),
        "gzip" | "x-gzip" => Ok(Compression::Gzip),
        _ => Err(format!("unsupported Content-Encoding `{text}`: send gzip or no encoding")),
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("request body is larger than max_request_body_size ({limit} bytes)")]
    TooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    Read(#[from] hyper::Error),
    #[error("request body is not valid gzip: {0}")]
    BadGzip(std::io::Error),
    #[error(
        "the request body did not arrive within {setting} ({after:?}): the connection is closed; send the whole \
         body without pausing"
    )]
    TimedOut { setting: &'static str, after: Duration },
    #[error(
        "unsupported Transfer-Encoding `{0}`: only `chunked` is supported; to compress the body, send \
         `Content-Encoding: gzip`"
    )]
    TransferEncoding(String),
    #[error(transparent)]
    Memory(Exceeded),
}

impl BodyError {
    /// The HTTP status that says what went wrong.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } | BodyError::Memory(Exceeded::TooLarge { .. } | Exceeded::Items { .. }) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            BodyError::Memory(Exceeded::Busy) => StatusCode::SERVICE_UNAVAILABLE,
            BodyError::TimedOut { .. } => StatusCode::REQUEST_TIMEOUT,
            BodyError::TransferEncoding(_) => StatusCode::NOT_IMPLEMENTED,
            BodyError::Read(_) | BodyError::BadGzip(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads the whole body, refusing more than `max_body` bytes before and after gzip,
/// and paying `memory` for every byte held. The declared `Content-Length` is checked and
/// paid for first, so an oversized upload, or one there is no room for, is refused
/// without reading it. Returns the body and what it holds of `memory`.
pub(crate) async fn read_body(
    req: Request<Incoming>,
    limits: &BodyLimits,
    compression: Compression,
    memory: &MemoryBudget,
) -> Result<(Bytes, Charge), BodyError> {
    transfer_codings(req.headers())?;
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let declared = match declared {
        Some(n) if n > limits.max_body as u64 => return Err(BodyError::TooLarge { limit: limits.max_body }),
        Some(n) => Some(n as usize),
        None => None,
    };
    let mut charge = Charge::new(memory);
    if let Some(n) = declared {
        charge.take(n).map_err(BodyError::Memory)?;
    }
    let raw = collect_limited(req.into_body(), limits, declared, &mut charge).await?;
    match compression {
        Compression::None => Ok((raw, charge)),
        Compression::Gzip => {
            let expanded = gunzip(&raw, limits.max_body, &mut charge)?;
            charge.give_back(raw.len());
            Ok((expanded, charge))
        }
    }
}

/// Refuses a transfer coding other than `chunked`: hyper reads the chunks and would
/// hand on a `gzip, chunked` body still compressed, as if it were plain.
fn transfer_codings(headers: &HeaderMap) -> Result<(), BodyError> {
    for value in headers.get_all(TRANSFER_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes());
        let mut codings = text.split(',').map(str::trim).filter(|c| !c.is_empty());
        if codings.any(|c| !c.eq_ignore_ascii_case("chunked")) {
            return Err(BodyError::TransferEncoding(text.trim().to_owned()));
        }
    }
    Ok(())
}

async fn collect_limited(
    mut body: Incoming,
    limits: &BodyLimits,
    declared: Option<usize>,
    charge: &mut Charge,
) -> Result<Bytes, BodyError> {
    let deadline = Instant::now() + limits.read_timeout;
    // The usual body is one frame: hand it on as is, without a copy.
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    let mut total = 0usize;
    loop {
        let idle_until = Instant::now() + limits.read_idle_timeout;
        let frame = match tokio::time::timeout_at(idle_until.min(deadline), body.frame()).await {
            Ok(Some(frame)) => frame?,
            Ok(None) => break,
            Err(_) if idle_until < deadline => {
                return Err(BodyError::TimedOut { setting: "read_idle_timeout", after: limits.read_idle_timeout });
            }
            Err(_) => return Err(BodyError::TimedOut { setting: "read_timeout", after: limits.read_timeout }),
        };
        let Ok(data) = frame.into_data() else { continue };
        total = total.saturating_add(data.len());
        if total > limits.max_body {
            return Err(BodyError::TooLarge { limit: limits.max_body });
        }
        // A body of unknown length (chunked) is paid for as it arrives; hyper holds one
        // with a `Content-Length` to that length, which was paid for already.
        if declared.is_none() {
            charge.take(data.len()).map_err(BodyError::Memory)?;
        }
        match first.take() {
            None if rest.is_empty() => first = Some(data),
            None => rest.extend_from_slice(&data),
            Some(prev) => {
                let hint = declared.unwrap_or(0).max(prev.len() + data.len());
                rest.reserve(hint);
                rest.extend_from_slice(&prev);
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(match first {
        Some(b) => b,
        None => Bytes::from(rest),
    })
}

/// Decompresses, stopping one byte past `limit` so a small zip bomb cannot expand
/// into gigabytes, and paying for the output as it grows.
fn gunzip(compressed: &[u8], limit: usize, charge: &mut Charge) -> Result<Bytes, BodyError> {
    const PART: usize = 64 * 1024;
    let start = compressed.len().saturating_mul(4).clamp(PART, limit.max(PART));
    charge.take(start + PART).map_err(BodyError::Memory)?;
    let mut out = Vec::with_capacity(start);
    let mut part = vec![0u8; PART];
    let mut decoder = MultiGzDecoder::new(compressed).take(limit as u64 + 1);
    loop {
        let n = decoder.read(&mut part).map_err(BodyError::BadGzip)?;
        if n == 0 {
            break;
        }
        if out.len() + n > limit {
            return Err(BodyError::TooLarge { limit });
        }
        if out.len() + n > out.capacity() {
            let grown = (2 * out.capacity()).clamp(out.len() + n, limit);
            charge.take(grown - out.capacity()).map_err(BodyError::Memory)?;
            out.reserve_exact(grown - out.len());
        }
        out.extend_from_slice(&part[..n]);
    }
    drop(part);
    charge.give_back(PART);
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("test header"));
        }
        h
    }

    #[test]
    fn content_headers() {
        assert_eq!(
            media_type(&headers(&[("content-type", "Application/JSON; charset=utf-8")])).as_deref(),
            Some("application/json")
        );
        assert_eq!(media_type(&HeaderMap::new()), None);
        assert_eq!(compression(&headers(&[("content-encoding", "GZIP")])), Ok(Compression::Gzip));
        assert_eq!(compression(&HeaderMap::new()), Ok(Compression::None));
        assert!(compression(&headers(&[("content-encoding", "br")])).is_err());
    }

    #[test]
    fn only_the_chunked_transfer_coding_is_read() {
        assert!(transfer_codings(&HeaderMap::new()).is_ok());
        assert!(transfer_codings(&headers(&[("transfer-encoding", "chunked")])).is_ok());
        assert!(transfer_codings(&headers(&[("transfer-encoding", "Chunked")])).is_ok());
        for refused in [&[("transfer-encoding", "gzip, chunked")][..], &[("transfer-encoding", "deflate")]] {
            let e = transfer_codings(&headers(refused)).expect_err("refused");
            assert_eq!(e.status(), StatusCode::NOT_IMPLEMENTED);
            assert!(e.to_string().contains("Content-Encoding: gzip"), "{e}");
        }
        let two_headers = headers(&[("transfer-encoding", "gzip"), ("transfer-encoding", "chunked")]);
        assert!(transfer_codings(&two_headers).is_err());
    }

    #[test]
    fn gunzip_limits_the_expanded_size_and_pays_for_it() {
        use flate2::{Compression as Level, write::GzEncoder};
        use std::io::Write;
        let mut enc = GzEncoder::new(Vec::new(), Level::best());
        enc.write_all(&vec![b'a'; 300_000]).expect("in memory");
        let gz = enc.finish().expect("in memory");
        assert!(gz.len() < 1_000);
        let budget = MemoryBudget::new(10 << 20);
        let mut charge = Charge::new(&budget);
        assert!(matches!(gunzip(&gz, 299_999, &mut charge), Err(BodyError::TooLarge { limit: 299_999 })));
        let mut charge = Charge::new(&budget);
        let out = gunzip(&gz, 300_000, &mut charge).expect("fits");
        assert_eq!(out.len(), 300_000);
        assert!(charge.held() >= 300_000, "the expanded body is paid for: {}", charge.held());
        assert!(matches!(gunzip(b"not gzip", 100, &mut charge), Err(BodyError::BadGzip(_))));

        // There is not room for the expanded body: refused while expanding.
        let small = MemoryBudget::new(200_000);
        let mut charge = Charge::new(&small);
        let e = gunzip(&gz, 300_000, &mut charge).expect_err("no room");
        assert!(matches!(e, BodyError::Memory(Exceeded::TooLarge { .. })), "{e}");
    }
}
