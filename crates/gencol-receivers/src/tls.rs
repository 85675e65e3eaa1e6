//! `tls:` on a receiver: its certificate and key, and with `client_ca_file` a required,
//! verified client certificate (mTLS). The same settings serve both protocols of a
//! receiver (HTTP/1.1 and, for `otlp`, gRPC), each listener with its own ALPN.
//!
//! Files are read and checked at config load, so a bad certificate fails `gencol validate`
//! and never half-starts a receiver. While it runs, a listener looks at the files once a
//! second ([`RELOAD_CHECK`]); when one changed (modification time or size) all are read
//! again and new connections use them. A replacement that does not load (a key written
//! before its certificate, say) is logged and the previous certificate stays in use until
//! the files make a valid pair again. Connections already open keep what they started with.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use gencol_engine::CancellationToken;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

use crate::settings::SettingsError;

/// How often a listener checks whether its certificate files changed.
pub(crate) const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// `tls:` as written in YAML.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsSettings {
    pub cert_file: String,
    pub key_file: String,
    #[serde(default)]
    pub client_ca_file: Option<String>,
    #[serde(default)]
    pub min_version: MinVersion,
}

/// `min_version`: the oldest TLS version a client may use.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
pub(crate) enum MinVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// What a listener speaks inside TLS, offered by ALPN.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Alpn {
    Http1,
    H2,
}

/// The files of one receiver's `tls:`, resolved against the config file's folder, and
/// checked: they load.
#[derive(Clone, Debug)]
pub(crate) struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    min_version: MinVersion,
}

impl TlsSettings {
    /// Resolves the paths and loads them once, so that a missing or broken file is a
    /// config error at the key to fix.
    pub fn check(self, base_dir: &Path) -> Result<TlsFiles, SettingsError> {
        let files = TlsFiles {
            cert: base_dir.join(&self.cert_file),
            key: base_dir.join(&self.key_file),
            client_ca: self.client_ca_file.as_ref().map(|f| base_dir.join(f)),
            min_version: self.min_version,
        };
        files.config(Alpn::Http1).map_err(|e| SettingsError::new("tls", e.to_string()))?;
        Ok(files)
    }
}

/// A certificate file that does not load, said with the setting that names it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("tls.{key}: cannot read {path}: {source}")]
    Read {
        key: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("tls.{key}: {path} holds no PEM {what}")]
    Empty { key: &'static str, path: String, what: &'static str },
    #[error("tls.{key}: {path}: {message}")]
    Invalid { key: &'static str, path: String, message: String },
}

impl TlsFiles {
    /// A server configuration from the files as they are now.
    fn config(&self, alpn: Alpn) -> Result<ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = match self.min_version {
            MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            MinVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let invalid = |key, path: &Path, e: &dyn std::fmt::Display| TlsError::Invalid {
            key,
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let certs = read_certs("cert_file", &self.cert)?;
        let key_pem = read("key_file", &self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                TlsError::Empty { key: "key_file", path: self.key.display().to_string(), what: "private key" }
            }
            e => invalid("key_file", &self.key, &e),
        })?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| invalid("min_version", &self.cert, &e))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs("client_ca_file", path)? {
                    roots.add(cert).map_err(|e| invalid("client_ca_file", path, &e))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| invalid("client_ca_file", path, &e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| TlsError::Invalid {
            key: "key_file",
            path: self.key.display().to_string(),
            message: format!("does not go with the certificate in {}: {e}", self.cert.display()),
        })?;
        config.alpn_protocols = match alpn {
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::H2 => vec![b"h2".to_vec()],
        };
        Ok(config)
    }

    /// What tells a changed file: each one's modification time and size.
    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        std::iter::once(&self.cert)
            .chain(std::iter::once(&self.key))
            .chain(self.client_ca.iter())
            .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
            .collect()
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { key, path: path.display().to_string(), source })
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| TlsError::Invalid {
        key,
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Empty { key, path: path.display().to_string(), what: "certificate" });
    }
    Ok(certs)
}

/// The TLS side of one listener: the configuration in use, replaced when the files change.
#[derive(Clone)]
pub(crate) struct ServerTls {
    current: Arc<ArcSwap<ServerConfig>>,
    /// How long a client may take to finish its handshake.
    handshake_timeout: Duration,
}

impl ServerTls {
    /// Loads the files and, until `shutdown`, watches them.
    pub fn start(
        files: &TlsFiles,
        alpn: Alpn,
        handshake_timeout: Duration,
        receiver: &str,
        shutdown: CancellationToken,
    ) -> Result<ServerTls, TlsError> {
        let current = Arc::new(ArcSwap::from_pointee(files.config(alpn)?));
        tokio::spawn(watch(files.clone(), alpn, current.clone(), receiver.to_owned(), shutdown));
        Ok(ServerTls { current, handshake_timeout })
    }

    /// Completes the server side of a handshake. A client that speaks plain HTTP to the
    /// TLS port gets a plain `400` saying so (as Go's servers do), not a reset.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let acceptor = TlsAcceptor::from(self.current.load_full());
        let handshake = async {
            if plain_http(&stream).await? {
                crate::http::refuse(stream, &plain_http_answer());
                return Err(io::Error::new(io::ErrorKind::InvalidData, "plain HTTP sent to a TLS listener"));
            }
            acceptor.accept(stream).await
        };
        tokio::time::timeout(self.handshake_timeout, handshake)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake not finished in time"))?
    }
}

/// Whether the client's first byte starts an HTTP request rather than a TLS record (a
/// handshake record starts with 0x16).
async fn plain_http(stream: &TcpStream) -> io::Result<bool> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await?;
    Ok(n == 1 && first[0].is_ascii_uppercase())
}

/// The whole answer to a plain HTTP request on a TLS port.
fn plain_http_answer() -> Vec<u8> {
    let body = "this port speaks TLS: send the request over https://\n";
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Checks the files every [`RELOAD_CHECK`]; loads them again when they changed.
async fn watch(
    files: TlsFiles,
    alpn: Alpn,
    current: Arc<ArcSwap<ServerConfig>>,
    receiver: String,
    stop: CancellationToken,
) {
    let mut seen = files.stamp();
    let mut ticks = tokio::time::interval(RELOAD_CHECK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let stamp = files.stamp();
        if stamp == seen {
            continue;
        }
        seen = stamp;
        match files.config(alpn) {
            Ok(config) => {
                current.store(Arc::new(config));
                tracing::info!(receiver = %receiver, "tls: certificate files changed; new connections use them");
            }
            Err(e) => tracing::error!(
                receiver = %receiver,
                "tls: certificate files changed but do not load ({e}); the previous certificate stays in use"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let (c, k) = (format!("{name}.crt"), format!("{name}.key"));
        std::fs::write(dir.join(&c), cert.cert.pem()).expect("write");
        std::fs::write(dir.join(&k), cert.signing_key.serialize_pem()).expect("write");
        (c, k)
    }

    #[test]
    fn files_are_checked_at_load_with_the_key_at_fault() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = write_pair(dir.path(), "a");
        let ok = TlsSettings {
            cert_file: cert.clone(),
            key_file: key.clone(),
            client_ca_file: None,
            min_version: MinVersion::Tls13,
        };
        ok.clone().check(dir.path()).expect("valid pair");

        let missing =
            TlsSettings { cert_file: "nope.crt".into(), ..ok.clone() }.check(dir.path()).expect_err("missing");
        assert!(missing.message.starts_with("tls.cert_file: cannot read"), "{}", missing.message);
        assert!(missing.message.contains("nope.crt"), "{}", missing.message);

        std::fs::write(dir.path().join("empty.pem"), "not pem").expect("write");
        let empty = TlsSettings { key_file: "empty.pem".into(), ..ok.clone() }.check(dir.path()).expect_err("no key");
        assert!(
            empty.message.contains("tls.key_file") && empty.message.contains("no PEM private key"),
            "{}",
            empty.message
        );

        let (_, other_key) = write_pair(dir.path(), "b");
        let mismatch = TlsSettings { key_file: other_key, ..ok.clone() }.check(dir.path()).expect_err("mismatch");
        assert!(mismatch.message.contains("does not go with the certificate"), "{}", mismatch.message);

        let no_ca = TlsSettings { client_ca_file: Some("empty.pem".into()), ..ok }.check(dir.path()).expect_err("ca");
        assert!(
            no_ca.message.contains("tls.client_ca_file") && no_ca.message.contains("no PEM certificate"),
            "{}",
            no_ca.message
        );
    }

    #[test]
    fn the_plain_http_answer_is_complete() {
        let raw = String::from_utf8(plain_http_answer()).expect("text");
        let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{raw}");
    }

    #[test]
    fn a_changed_file_changes_the_stamp() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = write_pair(dir.path(), "a");
        let files =
            TlsSettings { cert_file: cert, key_file: key, client_ca_file: None, min_version: MinVersion::Tls12 }
                .check(dir.path())
                .expect("valid");
        let before = files.stamp();
        assert!(before.iter().all(Option::is_some));
        write_pair(dir.path(), "a");
        std::fs::write(dir.path().join("a.crt"), "x").expect("shorter");
        assert_ne!(files.stamp(), before);
        assert!(files.config(Alpn::H2).is_err(), "a broken file does not load");
    }
}
