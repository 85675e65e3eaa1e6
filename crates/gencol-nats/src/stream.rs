//! The stream between tiers: created when absent, checked when present.
//!
//! Work-queue retention (a message goes once every partition's consumer acknowledged it),
//! file storage, `discard: new` (a full stream refuses new messages, so the gateway
//! answers 503, rather than dropping messages not processed yet), and a 2-minute
//! duplicate window for `Nats-Msg-Id`.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::NatsTarget;

/// How long JetStream remembers a `Nats-Msg-Id` to drop a copy published again.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The stream's configuration for `target`.
pub fn config(target: &NatsTarget) -> stream::Config {
    stream::Config {
        name: target.stream.clone(),
        subjects: vec![target.stream_subjects()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        num_replicas: target.replicas,
        max_age: target.max_age,
        max_bytes: target.max_bytes.and_then(|b| i64::try_from(b).ok()).unwrap_or(-1),
        duplicate_window: DUPLICATE_WINDOW,
        description: Some("gencol: generation spans between tiers (partitioned by trace)".into()),
        ..Default::default()
    }
}

/// Gets the stream, creating it when absent; an existing stream must hold the subjects.
pub async fn ensure(js: &jetstream::Context, target: &NatsTarget) -> Result<stream::Info, String> {
    let mut stream = js
        .get_or_create_stream(config(target))
        .await
        .map_err(|e| format!("cannot get or create stream `{}` at {}: {e}", target.stream, target.shown()))?;
    let info = stream.info().await.map_err(|e| format!("cannot read stream `{}`: {e}", target.stream))?.clone();
    let wanted = target.stream_subjects();
    if !info.config.subjects.contains(&wanted) {
        return Err(format!(
            "stream `{}` exists with subjects {:?}, not `{wanted}`: use another `stream` name, or the `subject` it was made with",
            target.stream, info.config.subjects
        ));
    }
    Ok(info)
}
