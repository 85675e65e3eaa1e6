//! `s3`: every generation archived as gzip NDJSON objects in S3 or any S3-compatible store
//! (Cloudflare R2, MinIO, Ceph, ...), through `object_store` (SigV4, the AWS credential
//! chain).
//!
//! Objects are closed by size, span count or age through the engine's batching
//! ([`Exporter::batching`]): the spans of an object wait in the exporter's queue (on disk
//! with `queue.kind: disk`) until the object is written whole with one PUT, so an object
//! is never seen half-written and nothing is taken off the queue before S3 holds it.
//! `privacy_mode` and the routing keys are the engine's, as for every exporter.

mod config;
mod object;
mod profile;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use gencol_config::{ComponentId, Diagnostic, Located, Node, decode};
use gencol_engine::{
    Batching, BoxFuture, ComponentContext, ExportError, Exporter, ExporterConfig, ExporterFactory, SecretMask,
};
use gencol_model::SpanItem;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{Attribute, Attributes, ClientOptions, ObjectStore, PutOptions, PutPayload, RetryConfig};

pub use config::{S3ExporterSettings, S3Settings};
use object::{Layout, Object};

use crate::http::error_chain;

pub struct S3ExporterFactory;

impl ExporterFactory for S3ExporterFactory {
    fn kind(&self) -> &str {
        "s3"
    }
    fn about(&self) -> &str {
        "S3 and S3-compatible storage (R2, MinIO, Ceph): generations as gzip NDJSON objects, one OTLP/JSON span per line, partitioned by hour"
    }
    fn configure(
        &self,
        _ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ExporterConfig>, Vec<Diagnostic>> {
        let settings: S3ExporterSettings = decode(config).map_err(|d| vec![d])?;
        Ok(Box::new(S3ExporterConfig { settings: settings.check(config)? }))
    }
}

struct S3ExporterConfig {
    settings: S3Settings,
}

impl ExporterConfig for S3ExporterConfig {
    fn target_addr(&self) -> Option<String> {
        let u = self.settings.endpoint.as_ref()?;
        Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?))
    }
    fn build(&self, id: &ComponentId) -> Result<Arc<dyn Exporter>, String> {
        Ok(Arc::new(S3Exporter::new(&id.to_string(), &self.settings, |k| std::env::var(k).ok())?))
    }
}

/// Writes each batch as one object per time partition.
pub struct S3Exporter {
    id: String,
    store: Arc<AmazonS3>,
    layout: Layout,
    batching: Batching,
    /// `s3://bucket/prefix` (and the endpoint), as messages show where objects go.
    shown: String,
    /// The credentials, kept out of every message the store sends back.
    mask: SecretMask,
}

impl S3Exporter {
    /// `env` reads the AWS environment (a parameter so tests need not set the process's).
    pub fn new(id: &str, s: &S3Settings, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        // Explicit keys, then AWS_ACCESS_KEY_ID & co., then the shared credentials file,
        // then what object_store finds itself (web identity, container and instance roles).
        let from_env = env("AWS_ACCESS_KEY_ID").is_some_and(|k| !k.is_empty());
        let credentials =
            s.credentials.clone().or_else(|| if from_env { None } else { profile::shared_file_credentials(&env) });
        let mut secrets = Vec::new();
        let mut builder = match &credentials {
            // Not from_env: an AWS_SESSION_TOKEN there must not be paired with these keys.
            Some(c) => {
                let mut b = AmazonS3Builder::new()
                    .with_access_key_id(&c.access_key_id)
                    .with_secret_access_key(&c.secret_access_key);
                if let Some(t) = &c.session_token {
                    b = b.with_token(t);
                    secrets.push(t.clone());
                }
                secrets.extend([c.access_key_id.clone(), c.secret_access_key.clone()]);
                b
            }
            None => {
                secrets.extend(
                    ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"].into_iter().filter_map(&env),
                );
                AmazonS3Builder::from_env()
            }
        };
        let region = s
            .region
            .clone()
            .or_else(|| env("AWS_REGION").filter(|r| !r.is_empty()))
            .or_else(|| env("AWS_DEFAULT_REGION").filter(|r| !r.is_empty()))
            .unwrap_or_else(|| "us-east-1".to_owned());
        builder = builder
            .with_bucket_name(&s.bucket)
            .with_region(&region)
            // The engine retries (honouring its retry settings and Retry-After); a second
            // layer of retries inside would hide failures from its counters.
            .with_retry(RetryConfig { max_retries: 0, ..RetryConfig::default() })
            // The exporter's `timeout` bounds each send; object_store's own 30 s per request
            // would cut a large object's PUT short whatever `timeout` says.
            .with_client_options(ClientOptions::new().with_timeout_disabled());
        let mut shown = format!("s3://{}/{}", s.bucket, s.prefix);
        if let Some(e) = &s.endpoint {
            builder = builder
                .with_endpoint(e.as_str().trim_end_matches('/'))
                .with_allow_http(e.scheme() == "http")
                .with_virtual_hosted_style_request(false);
            shown = format!("{shown} at {}", crate::http::redacted_url(e));
        }
        let mask = SecretMask::new(secrets);
        let store = builder.build().map_err(|e| format!("cannot set up S3 access: {}", mask.mask(&e.to_string())))?;
        Ok(S3Exporter {
            id: id.to_owned(),
            store: Arc::new(store),
            layout: Layout { prefix: s.prefix.clone(), partition_by: s.partition_by, spans: s.spans },
            batching: Batching {
                max_spans: s.max_object_spans,
                max_bytes: s.max_object_bytes,
                max_wait: s.max_object_age,
            },
            shown,
            mask,
        })
    }

    async fn send(&self, batch: &[SpanItem]) -> Result<(), ExportError> {
        // JSON and gzip of megabytes: off the runtime's worker threads.
        let (layout, items) = (self.layout.clone(), batch.to_vec());
        let objects = tokio::task::spawn_blocking(move || layout.objects(&items))
            .await
            .map_err(|e| ExportError::retryable(format!("encoding objects failed: {e}")))?;
        // Each object is keyed by its spans: a batch sent again after a failure rewrites
        // the objects already written under the same keys.
        for object in objects {
            let (key, spans, bytes) = (object.key.clone(), object.spans, object.body.len());
            self.put(object).await?;
            tracing::debug!(exporter = %self.id, key = %key, spans, bytes, "object written");
        }
        Ok(())
    }

    async fn put(&self, object: Object) -> Result<(), ExportError> {
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, "application/gzip".into());
        let options = PutOptions { attributes, ..PutOptions::default() };
        let path = Path::from(object.key.clone());
        match self.store.put_opts(&path, PutPayload::from(object.body), options).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.classify(&object.key, e)),
        }
    }

    /// What a failed PUT means for the batch, in a message that names the bucket and the
    /// store's own reason (its error code and message), never a credential.
    fn classify(&self, key: &str, e: object_store::Error) -> ExportError {
        let chain = error_chain(&e);
        let reason = self.mask.excerpt(&s3_reason(&chain), 512);
        let at = format!("writing {key} to {}", self.shown);
        // S3's own word first: codes its documentation says to retry, whatever the status.
        if let Some(code) = xml_tag(&chain, "Code")
            && RETRIED_CODES.contains(&code.as_str())
        {
            return ExportError::retryable(format!("{at}: {reason}"));
        }
        if chain.contains("redirect without LOCATION") || status_in(&chain).is_some_and(|s| (300..400).contains(&s)) {
            return ExportError::permanent(format!(
                "{at}: S3 redirected the request ({reason}); set `region` to the bucket's region (or `endpoint` to its store)"
            ));
        }
        match e {
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                ExportError::permanent(format!(
                    "{at}: access refused ({reason}); check access_key_id and secret_access_key (or the AWS environment) and that they may s3:PutObject in the bucket"
                ))
            }
            object_store::Error::NotFound { .. } => ExportError::permanent(format!(
                "{at}: not found ({reason}); check that the bucket exists in the region and endpoint given"
            )),
            // 409: a conflicting operation on the bucket in progress (OperationAborted).
            object_store::Error::AlreadyExists { .. } => ExportError::retryable(format!("{at}: {reason}")),
            object_store::Error::Generic { .. } => match status_in(&chain) {
                Some(s) if (400..500).contains(&s) && s != 408 && s != 429 => {
                    ExportError::permanent(format!("{at}: refused ({reason})"))
                }
                _ => ExportError::retryable(format!("{at}: {reason}")),
            },
            _ => ExportError::permanent(format!("{at}: {reason}")),
        }
    }

    async fn test(&self) -> Result<String, ExportError> {
        let request = crate::test_connection_request();
        let items = gencol_model::otlp::from_request(request);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut body = gencol_model::otlp::encode_items_json(&items);
        body.push(b'\n');
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &body).map_err(|e| ExportError::permanent(e.to_string()))?;
        let body = gz.finish().map_err(|e| ExportError::permanent(e.to_string()))?;
        // Under `_`: Athena, Glue, Hive and Spark skip such folders, so the test object
        // never joins the data.
        let key = format!(
            "{}_gencol_test_connection/{}-{:016x}.ndjson.gz",
            self.layout.prefix,
            object::stamp(now.as_nanos() as u64),
            fastrand::u64(..)
        );
        self.put(Object { key: key.clone(), body, spans: 1 }).await?;
        Ok(format!("wrote {key} to {}", self.shown))
    }
}

/// S3 error codes that are worth another try whatever their HTTP status (S3's error
/// responses list them as retryable; STS's throttling answers for credentials too).
const RETRIED_CODES: [&str; 8] = [
    "RequestTimeout",
    "OperationAborted",
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "Throttling",
    "ThrottlingException",
    "IDPCommunicationError",
];

/// The text of the first `<name>…</name>` in an S3 XML error.
fn xml_tag(chain: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = chain.find(&open)? + open.len();
    let end = chain[start..].find(&format!("</{name}>"))? + start;
    Some(chain[start..end].to_owned())
}

/// The store's own words: `Code: Message` from an S3 XML error, else the whole chain.
fn s3_reason(chain: &str) -> String {
    let tag = |name: &str| xml_tag(chain, name);
    let status = status_in(chain).map(|s| format!("{s} ")).unwrap_or_default();
    match (tag("Code"), tag("Message")) {
        (Some(code), Some(message)) => format!("{status}{code}: {message}"),
        (Some(code), None) => format!("{status}{code}"),
        _ => chain.to_owned(),
    }
}

/// The HTTP status object_store reports in its message (`status code: 503 Service
/// Unavailable`); it has no other way to give it for an error it calls generic.
fn status_in(chain: &str) -> Option<u16> {
    let rest = &chain[chain.find("status code: ")? + "status code: ".len()..];
    rest.get(..3)?.parse().ok()
}

impl Exporter for S3Exporter {
    fn export<'a>(&'a self, batch: &'a [SpanItem]) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(self.send(batch))
    }

    fn test_connection(&self) -> BoxFuture<'_, Result<String, ExportError>> {
        Box::pin(self.test())
    }

    fn batching(&self) -> Option<Batching> {
        Some(self.batching)
    }
}
