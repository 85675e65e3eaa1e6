//! gzip, deflate and zstd, undone after the body is read and within the same limits: the
//! expanded body may be no larger than `max_request_body_size`, decompression stops one
//! byte past it (a small bomb cannot expand into gigabytes), and the output is paid for
//! from the memory budget as it grows. zstd frames may ask for a window of at most 8 MiB
//! (RFC 8878's advice for decoders), and that window is paid for too.

use std::io::Read;
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use futures_util::future::{Either, Ready, ready};
use gencol_model::budget::Charge;
use http::header::CONTENT_ENCODING;
use http::{HeaderMap, Request, StatusCode};
use tower::{Layer, Service};

use super::Refusal;
use super::read::{BodyError, Received};

/// How the body is compressed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Compression {
    None,
    Gzip,
    /// HTTP's `deflate`: zlib-wrapped (RFC 9110), or raw deflate as some clients send it.
    Deflate,
    Zstd,
}

impl Compression {
    /// A gRPC message's `grpc-encoding`: `None` for one gencol does not take (tonic then
    /// answers `UNIMPLEMENTED`, naming it).
    pub(crate) fn from_grpc_encoding(name: &str) -> Option<Compression> {
        match name.trim() {
            "" | "identity" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            "deflate" => Some(Compression::Deflate),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::None => "identity",
            Compression::Gzip => "gzip",
            Compression::Deflate => "deflate",
            Compression::Zstd => "zstd",
        }
    }
}

/// The largest zstd window a request may ask for: 2^23 bytes (8 MiB).
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// `Content-Encoding`; `Err` is the message naming the encoding we do not support.
pub(crate) fn compression(headers: &HeaderMap) -> Result<Compression, String> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(Compression::None);
    };
    let text = value.to_str().unwrap_or("").trim();
    let is = |name: &str| text.eq_ignore_ascii_case(name);
    if text.is_empty() || is("identity") {
        Ok(Compression::None)
    } else if is("gzip") || is("x-gzip") {
        Ok(Compression::Gzip)
    } else if is("deflate") {
        Ok(Compression::Deflate)
    } else if is("zstd") {
        Ok(Compression::Zstd)
    } else {
        Err(format!(
            "unsupported Content-Encoding `{}`: send gzip, zstd, deflate or no encoding",
            text.to_ascii_lowercase()
        ))
    }
}

#[derive(Clone, Copy)]
pub(crate) struct DecompressLayer {
    max_body: usize,
}

impl DecompressLayer {
    /// Expands to at most `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        DecompressLayer { max_body }
    }
}

impl<S> Layer<S> for DecompressLayer {
    type Service = Decompress<S>;

    fn layer(&self, inner: S) -> Decompress<S> {
        Decompress { max_body: self.max_body, inner }
    }
}

#[derive(Clone)]
pub(crate) struct Decompress<S> {
    max_body: usize,
    inner: S,
}

impl<S> Service<Request<Received>> for Decompress<S>
where
    S: Service<Request<Received>, Error = Refusal>,
{
    type Response = S::Response;
    type Error = Refusal;
    type Future = Either<Ready<Result<S::Response, Refusal>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Refusal>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Received>) -> Self::Future {
        // Checked by ContentLayer before the body was read.
        let compression = compression(req.headers());
        let refuse = |refusal| Either::Left(ready(Err(refusal)));
        match compression {
            Ok(Compression::None) => Either::Right(self.inner.call(req)),
            Ok(compression) => {
                let (parts, Received { bytes, mut charge }) = req.into_parts();
                match expand(compression, &bytes, self.max_body, &mut charge) {
                    Ok(expanded) => {
                        charge.give_back(bytes.len());
                        drop(bytes);
                        Either::Right(self.inner.call(Request::from_parts(parts, Received { bytes: expanded, charge })))
                    }
                    Err(e) => refuse(Refusal::from(e)),
                }
            }
            Err(message) => refuse(Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)),
        }
    }
}

/// Decompresses `compressed`, stopping one byte past `limit` and paying for the output as
/// it grows (and, for zstd, for its window).
pub(crate) fn expand(
    compression: Compression,
    compressed: &[u8],
    limit: usize,
    charge: &mut Charge,
) -> Result<Bytes, BodyError> {
    let corrupt = |source| BodyError::Corrupt { encoding: compression.name(), source };
    match compression {
        Compression::None => Ok(Bytes::copy_from_slice(compressed)),
        Compression::Gzip => read_limited(MultiGzDecoder::new(compressed), compressed.len(), limit, charge, corrupt),
        Compression::Deflate => {
            // A zlib stream starts with a header whose 16-bit value is a multiple of 31.
            let zlib = compressed.len() >= 2 && u16::from_be_bytes([compressed[0], compressed[1]]).is_multiple_of(31);
            if zlib {
                read_limited(ZlibDecoder::new(compressed), compressed.len(), limit, charge, corrupt)
            } else {
                read_limited(DeflateDecoder::new(compressed), compressed.len(), limit, charge, corrupt)
            }
        }
        Compression::Zstd => {
            let window = (1usize << ZSTD_WINDOW_LOG_MAX).min(limit.max(1024));
            charge.take(window).map_err(BodyError::Memory)?;
            let mut decoder = zstd::stream::read::Decoder::with_buffer(compressed).map_err(corrupt)?;
            decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(corrupt)?;
            let expanded = read_limited(decoder, compressed.len(), limit, charge, corrupt);
            charge.give_back(window);
            expanded
        }
    }
}

/// Reads `decoder` to its end, stopping one byte past `limit`, paying for the output.
fn read_limited(
    decoder: impl Read,
    compressed_len: usize,
    limit: usize,
    charge: &mut Charge,
    corrupt: impl Fn(std::io::Error) -> BodyError,
) -> Result<Bytes, BodyError> {
    const PART: usize = 64 * 1024;
    let start = compressed_len.saturating_mul(4).clamp(PART, limit.max(PART));
    charge.take(start + PART).map_err(BodyError::Memory)?;
    let mut out = Vec::with_capacity(start);
    let mut part = vec![0u8; PART];
    let mut decoder = decoder.take(limit as u64 + 1);
    loop {
        let n = decoder.read(&mut part).map_err(&corrupt)?;
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
    use std::io::Write;

    use flate2::{Compression as Level, write::GzEncoder};
    use gencol_model::budget::{Exceeded, MemoryBudget};
    use http::HeaderValue;
    use tower::ServiceExt;

    use super::*;
    use crate::http::testing::recorder;

    fn gzipped(plain: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Level::best());
        enc.write_all(plain).expect("in memory");
        enc.finish().expect("in memory")
    }

    fn received(bytes: Vec<u8>, budget: &MemoryBudget, encoding: Option<&str>) -> Request<Received> {
        let mut charge = Charge::new(budget);
        charge.take(bytes.len()).expect("room");
        let mut req = Request::new(Received { bytes: bytes.into(), charge });
        if let Some(e) = encoding {
            req.headers_mut().insert(CONTENT_ENCODING, HeaderValue::from_str(e).expect("header"));
        }
        req
    }

    #[test]
    fn content_encodings() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_ENCODING, HeaderValue::from_str(v).expect("header"));
            h
        };
        assert_eq!(compression(&with("GZIP")), Ok(Compression::Gzip));
        assert_eq!(compression(&with("zstd")), Ok(Compression::Zstd));
        assert_eq!(compression(&with("Deflate")), Ok(Compression::Deflate));
        assert_eq!(compression(&with("identity")), Ok(Compression::None));
        assert_eq!(compression(&HeaderMap::new()), Ok(Compression::None));
        assert!(compression(&with("br")).is_err());
    }

    #[tokio::test]
    async fn a_gzipped_body_reaches_the_handler_expanded_and_paid_for() {
        let (inner, seen) = recorder::<Received>();
        let budget = MemoryBudget::new(10 << 20);
        let plain = vec![b'a'; 300_000];
        let gz = gzipped(&plain);
        DecompressLayer::new(300_000)
            .layer(inner.clone())
            .oneshot(received(gz, &budget, Some("gzip")))
            .await
            .expect("fits");
        DecompressLayer::new(10).layer(inner).oneshot(received(b"plain".to_vec(), &budget, None)).await.expect("as is");
        let seen = seen.lock().expect("test lock");
        assert_eq!(seen[0].body().bytes.len(), 300_000);
        assert!(seen[0].body().charge.held() >= 300_000, "the expanded body is paid for");
        assert_eq!(seen[1].body().bytes, Bytes::from_static(b"plain"));
    }

    #[tokio::test]
    async fn expansion_stops_at_the_limit_and_at_the_budget() {
        let budget = MemoryBudget::new(10 << 20);
        let gz = gzipped(&vec![b'a'; 300_000]);
        assert!(gz.len() < 1_000);
        let svc = DecompressLayer::new(299_999).layer(recorder::<Received>().0);
        let e = svc.clone().oneshot(received(gz.clone(), &budget, Some("gzip"))).await.expect_err("bomb");
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        let e = svc.oneshot(received(b"not gzip".to_vec(), &budget, Some("gzip"))).await.expect_err("bad gzip");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(budget.in_use(), 0, "a refused body's charge is given back");

        // There is not room for the expanded body: refused while expanding.
        let small = MemoryBudget::new(200_000);
        let mut charge = Charge::new(&small);
        let e = expand(Compression::Gzip, &gz, 300_000, &mut charge).expect_err("no room");
        assert!(matches!(e, BodyError::Memory(Exceeded::TooLarge { .. })), "{e}");
    }

    #[tokio::test]
    async fn zstd_and_deflate_bodies_expand_within_the_same_limits() {
        use flate2::write::{DeflateEncoder, ZlibEncoder};
        let plain = b"{\"resourceSpans\": []} ".repeat(2_000);
        let zstd_body = zstd::encode_all(&plain[..], 3).expect("in memory");
        let mut zlib = ZlibEncoder::new(Vec::new(), Level::default());
        zlib.write_all(&plain).expect("in memory");
        let zlib = zlib.finish().expect("in memory");
        let mut raw = DeflateEncoder::new(Vec::new(), Level::default());
        raw.write_all(&plain).expect("in memory");
        let raw = raw.finish().expect("in memory");

        let budget = MemoryBudget::new(64 << 20);
        let (inner, seen) = recorder::<Received>();
        let svc = DecompressLayer::new(plain.len()).layer(inner);
        for (body, encoding) in [(zstd_body.clone(), "zstd"), (zlib, "deflate"), (raw, "deflate")] {
            svc.clone().oneshot(received(body, &budget, Some(encoding))).await.expect(encoding);
        }
        assert!(seen.lock().expect("test lock").iter().all(|r| r.body().bytes[..] == plain[..]));
        drop(seen);

        // One byte over the limit once expanded: 413, whatever the encoding.
        let e = DecompressLayer::new(plain.len() - 1)
            .layer(recorder::<Received>().0)
            .oneshot(received(zstd_body, &budget, Some("zstd")))
            .await
            .expect_err("over the limit");
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        let e = svc.oneshot(received(b"not zstd".to_vec(), &budget, Some("zstd"))).await.expect_err("corrupt");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("not valid zstd"), "{}", e.message);
        assert_eq!(budget.in_use(), 0, "every charge given back");
    }

    #[test]
    fn a_zstd_bomb_stops_at_the_limit_and_a_huge_window_is_refused() {
        // 100 MiB of zeros compress to a few KiB.
        let bomb = zstd::encode_all(std::io::repeat(0).take(100 << 20), 19).expect("in memory");
        assert!(bomb.len() < 100_000, "{}", bomb.len());
        let budget = MemoryBudget::new(64 << 20);
        let mut charge = Charge::new(&budget);
        let e = expand(Compression::Zstd, &bomb, 10 << 20, &mut charge).expect_err("bomb");
        assert!(matches!(e, BodyError::TooLarge { limit } if limit == 10 << 20), "{e}");
        drop(charge);
        assert_eq!(budget.in_use(), 0);

        // A frame asking for a 128 MiB window is refused before it is allocated.
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
        encoder.window_log(27).expect("window");
        encoder.long_distance_matching(true).expect("ldm");
        encoder.write_all(&vec![7u8; 1 << 20]).expect("in memory");
        let wide = encoder.finish().expect("in memory");
        let mut charge = Charge::new(&budget);
        let e = expand(Compression::Zstd, &wide, 200 << 20, &mut charge).expect_err("window");
        assert!(matches!(e, BodyError::Corrupt { encoding: "zstd", .. }), "{e}");
    }
}
