//! `s3` exporter settings and their checks.

use std::fmt;
use std::time::Duration;

use gencol_config::{ByteSize, Diagnostic, Duration as ConfigDuration, Located, Node};
use serde::Deserialize;

use crate::http::parse_http_url;

/// How objects are grouped into key prefixes by their generations' time (UTC), in the
/// Hive style that Athena, Glue, ClickHouse, Snowflake and Spark read as partitions.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PartitionBy {
    /// `year=YYYY/month=MM/day=DD/hour=HH/`
    #[default]
    Hour,
    /// `year=YYYY/month=MM/day=DD/`
    Day,
    /// No time prefix: every object directly under `prefix`.
    None,
}

/// Which spans become lines.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SpanSelection {
    /// Generation spans only (LLM calls: `gen_ai.request.model` or `gen_ai.operation.name`),
    /// not the root and intermediate spans `hierarchy` adds.
    #[default]
    Generations,
    /// Every span the pipeline hands over.
    All,
}

/// As written in YAML. `Debug` is written by hand so the secret key never reaches a log.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3ExporterSettings {
    pub bucket: String,
    /// Key prefix, a "folder" (`gencol/generations/`); a missing final `/` is added.
    #[serde(default)]
    pub prefix: String,
    /// Default: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// An S3-compatible store (Cloudflare R2, MinIO, Ceph, ...): its base URL. Requests
    /// then use path-style URLs (`{endpoint}/{bucket}/{key}`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Static credentials; without them, the AWS environment and profile chain.
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub session_token: Option<String>,
    #[serde(default)]
    pub partition_by: PartitionBy,
    #[serde(default)]
    pub spans: SpanSelection,
    /// An object is closed when its spans reach this many bytes (as queued, protobuf).
    #[serde(default = "default_max_object_bytes")]
    pub max_object_bytes: ByteSize,
    /// ... or this many spans ...
    #[serde(default = "default_max_object_spans")]
    pub max_object_spans: usize,
    /// ... or when its first span has waited this long.
    #[serde(default = "default_max_object_age")]
    pub max_object_age: ConfigDuration,
}

fn default_max_object_bytes() -> ByteSize {
    ByteSize(8 * 1024 * 1024)
}

fn default_max_object_spans() -> usize {
    10_000
}

fn default_max_object_age() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(60))
}

/// Shown for a secret that is set.
fn set(v: &Option<String>) -> &'static str {
    if v.is_some() { "***" } else { "(unset)" }
}

impl fmt::Debug for S3ExporterSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3ExporterSettings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &set(&self.access_key_id))
            .field("secret_access_key", &set(&self.secret_access_key))
            .field("session_token", &set(&self.session_token))
            .field("partition_by", &self.partition_by)
            .field("spans", &self.spans)
            .field("max_object_bytes", &self.max_object_bytes)
            .field("max_object_spans", &self.max_object_spans)
            .field("max_object_age", &self.max_object_age)
            .finish()
    }
}

/// Static credentials, from the config or the shared credentials file.
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticCredentials(***)")
    }
}

/// Checked settings, what the exporter is built from.
#[derive(Clone, Debug)]
pub struct S3Settings {
    pub bucket: String,
    /// Empty, or ends with `/`.
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<reqwest::Url>,
    pub credentials: Option<StaticCredentials>,
    pub partition_by: PartitionBy,
    pub spans: SpanSelection,
    pub max_object_bytes: usize,
    pub max_object_spans: usize,
    pub max_object_age: Duration,
}

/// Upper bounds of the object limits.
const MAX_OBJECT_BYTES: u64 = 256 * 1024 * 1024;
const MAX_OBJECT_SPANS: usize = 1_000_000;

/// Characters S3 recommends against in keys, which object stores would percent-encode:
/// a prefix with them would not be the prefix the user reads in the bucket.
const AVOIDED_IN_KEYS: &[char] = &['\\', '{', '}', '^', '%', '`', '[', ']', '"', '<', '>', '~', '#', '|', '*', '?'];

impl S3ExporterSettings {
    /// Checks what serde cannot, reporting every problem at its line; no message shows a
    /// credential.
    pub fn check(self, config: &Located<Node>) -> Result<S3Settings, Vec<Diagnostic>> {
        let at = |key: &str| config.value.get(key).map(|n| n.loc.clone()).unwrap_or_else(|| config.loc.clone());
        let mut errors = Vec::new();
        let mut error = |key: &str, message: String| errors.push(Diagnostic::error(&at(key), message));
        let bucket = self.bucket.trim().to_owned();
        if let Err(m) = check_bucket(&bucket) {
            error("bucket", m);
        }
        let prefix = match check_prefix(&self.prefix) {
            Ok(p) => p,
            Err(m) => {
                error("prefix", m);
                String::new()
            }
        };
        let region = self.region.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
        if let Some(r) = &region
            && !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            error("region", format!("region `{r}` is not a region name (like `us-east-1` or `auto` for R2)"));
        }
        let endpoint = match self.endpoint.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
            None => None,
            Some(e) => parse_http_url(
                "endpoint",
                e,
                "write the store's base URL (`https://<account>.r2.cloudflarestorage.com`, `http://minio:9000`), or leave endpoint out for AWS S3",
                "put the keys in access_key_id and secret_access_key",
            )
            .map_err(|m| error("endpoint", m))
            .ok(),
        };
        let key = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let credentials = match (key(self.access_key_id), key(self.secret_access_key), key(self.session_token)) {
            (None, None, None) => None,
            (Some(access_key_id), Some(secret_access_key), session_token) => {
                Some(StaticCredentials { access_key_id, secret_access_key, session_token })
            }
            (None, Some(_), _) | (None, None, Some(_)) => {
                error(
                    "access_key_id",
                    "access_key_id is missing: set both access_key_id and secret_access_key, or neither to use the AWS environment (AWS_ACCESS_KEY_ID, AWS_PROFILE, an instance or task role)".to_owned(),
                );
                None
            }
            (Some(_), None, _) => {
                error(
                    "secret_access_key",
                    "secret_access_key is missing: set both access_key_id and secret_access_key, or neither to use the AWS environment".to_owned(),
                );
                None
            }
        };
        // One object is one PUT, held in memory three times while it is made (spans, JSON,
        // gzip): bounded so a typo cannot take the process's memory.
        if self.max_object_bytes.0 == 0 || self.max_object_bytes.0 > MAX_OBJECT_BYTES {
            error("max_object_bytes", "max_object_bytes must be between 1 byte and 256MiB (default 8MiB)".to_owned());
        }
        if self.max_object_spans == 0 || self.max_object_spans > MAX_OBJECT_SPANS {
            error("max_object_spans", "max_object_spans must be between 1 and 1000000 (default 10000)".to_owned());
        }
        let age = self.max_object_age.0;
        if age.is_zero() || age > Duration::from_secs(3600) {
            error(
                "max_object_age",
                "max_object_age must be between 1ms and 1h: spans wait that long in the queue before their object is written".to_owned(),
            );
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(S3Settings {
            bucket,
            prefix,
            region,
            endpoint,
            credentials,
            partition_by: self.partition_by,
            spans: self.spans,
            max_object_bytes: usize::try_from(self.max_object_bytes.0).unwrap_or(usize::MAX),
            max_object_spans: self.max_object_spans,
            max_object_age: age,
        })
    }
}

/// S3's bucket naming rules, so a typo is found by `gencol validate` rather than by a
/// failed upload.
fn check_bucket(bucket: &str) -> Result<(), String> {
    if bucket.is_empty() {
        return Err("bucket is empty: set it to the bucket's name (without s3://)".to_owned());
    }
    if let Some(rest) = bucket.strip_prefix("s3://") {
        return Err(format!("bucket must be the name alone: write `{}`", rest.trim_end_matches('/')));
    }
    let valid = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        return Err(format!(
            "bucket `{bucket}` is not a valid bucket name: 3 to 63 lower-case letters, digits, `-` and `.`, starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// The prefix as keys start with it: empty, or `a/b/`.
fn check_prefix(raw: &str) -> Result<String, String> {
    let p = raw.trim();
    if p.is_empty() {
        return Ok(String::new());
    }
    if p.starts_with('/') {
        return Err(format!("prefix `{p}` must not start with `/`: write `{}`", p.trim_start_matches('/')));
    }
    if let Some(c) = p.chars().find(|c| AVOIDED_IN_KEYS.contains(c) || c.is_control()) {
        return Err(format!("prefix `{p}` contains `{}`, which S3 keys should avoid", c.escape_default()));
    }
    let p = p.trim_end_matches('/');
    if p.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return Err(format!("prefix `{p}` has an empty, `.` or `..` part between its `/`"));
    }
    Ok(format!("{p}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_become_folders_and_bad_ones_are_named() {
        assert_eq!(check_prefix("").unwrap(), "");
        assert_eq!(check_prefix("gencol").unwrap(), "gencol/");
        assert_eq!(check_prefix("a/b/").unwrap(), "a/b/");
        assert!(check_prefix("/a").unwrap_err().contains("must not start with `/`"));
        assert!(check_prefix("a//b").unwrap_err().contains("empty"));
        assert!(check_prefix("a/{b}").unwrap_err().contains("`{`"));
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        assert!(check_bucket("gencol-archive.2026").is_ok());
        assert!(check_bucket("s3://gencol/").unwrap_err().contains("write `gencol`"));
        assert!(check_bucket("Gencol").is_err());
        assert!(check_bucket("ab").is_err());
        assert!(check_bucket("-ab").is_err());
    }
}
