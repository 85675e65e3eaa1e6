//! gencol's receivers, where data enters a pipeline: `generations` (generation
//! records an LLM gateway posts, SPEC §2) and `otlp` (standard OTLP/HTTP traces).
//!
//! Both are HTTP/1.1 servers built from the same plumbing (the `http` module: the
//! listener and its bound on connections, bearer auth, reading a body within its size,
//! time and memory limits), so they refuse, limit and shut down alike; they differ only
//! in what a body means. A receiver hands each
//! request's spans to its pipelines all or nothing and answers 503 when any is full,
//! so a sender's retry is never a duplicate of something half kept.

mod generations;
mod grpc;
mod http;
mod nats;
mod otlp;
mod settings;
mod tls;

use std::sync::Arc;

use gencol_engine::ReceiverFactory;

pub use generations::GenerationsReceiverFactory;
pub use http::ReceiverError;
pub use nats::NatsReceiverFactory;
pub use otlp::OtlpReceiverFactory;

/// The reason a refusal is counted under (`gencol_receiver_refused_records_total`), from
/// the status it is answered with; `None` for answers that refuse no data (a wrong path
/// or method, an internal error).
pub(crate) fn refused_reason(status: ::http::StatusCode) -> Option<gencol_engine::RefusedReason> {
    use gencol_engine::RefusedReason;
    match status.as_u16() {
        400 | 408 | 411 | 501 => Some(RefusedReason::Invalid),
        401 => Some(RefusedReason::Unauthorized),
        413 => Some(RefusedReason::TooLarge),
        415 => Some(RefusedReason::UnsupportedMediaType),
        503 => Some(RefusedReason::Backpressure),
        _ => None,
    }
}

/// The built-in receiver factories, for the engine's registry.
pub fn factories() -> Vec<Arc<dyn ReceiverFactory>> {
    vec![Arc::new(GenerationsReceiverFactory), Arc::new(OtlpReceiverFactory), Arc::new(NatsReceiverFactory)]
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    //! The factories as the engine sees them: settings from located YAML nodes.

    use std::path::PathBuf;
    use std::sync::Arc;

    use gencol_config::{ComponentId, Loc, Located, Node};
    use gencol_engine::ComponentContext;

    use super::factories;

    fn at(line: u32, value: Node) -> Located<Node> {
        Located { value, loc: Loc { file: Arc::from("gencol.yaml"), line, column: 5 } }
    }

    fn key(line: u32, name: &str) -> Located<String> {
        Located { value: name.to_owned(), loc: Loc { file: Arc::from("gencol.yaml"), line, column: 5 } }
    }

    fn ctx(kind: &str) -> ComponentContext {
        ComponentContext { id: ComponentId { kind: kind.to_owned(), name: None }, base_dir: PathBuf::from(".") }
    }

    #[test]
    fn factories_decode_located_settings() {
        let all = factories();
        let kinds: Vec<&str> = all.iter().map(|f| f.kind()).collect();
        assert_eq!(kinds, ["generations", "otlp", "nats"]);
        let (generations, otlp) = (&all[0], &all[1]);

        // `generations:` with nothing after it: every default.
        let config = generations.configure(&ctx("generations"), &at(2, Node::Null)).expect("defaults");
        assert_eq!(config.listen_addrs(), ["127.0.0.1:4320"]);
        assert!(config.emits_generations());
        let config = otlp.configure(&ctx("otlp"), &at(2, Node::Null)).expect("defaults");
        assert_eq!(config.listen_addrs(), ["127.0.0.1:4318"]);
        assert!(!config.emits_generations());

        let written = at(
            2,
            Node::Map(vec![
                (key(3, "endpoint"), at(3, Node::String("0.0.0.0:9000".into()))),
                (key(4, "max_request_body_size"), at(4, Node::String("512KiB".into()))),
                (
                    key(5, "auth"),
                    at(
                        5,
                        Node::Map(vec![(
                            key(6, "bearer_tokens"),
                            at(6, Node::Seq(vec![at(6, Node::String("t".into()))])),
                        )]),
                    ),
                ),
                (key(7, "service_name"), at(7, Node::String("gateway".into()))),
            ]),
        );
        let config = generations.configure(&ctx("generations"), &written).expect("valid");
        assert_eq!(config.listen_addrs(), ["0.0.0.0:9000"]);
        // `service_name` is the generations receiver's alone.
        let errors = otlp.configure(&ctx("otlp"), &written).err().expect("unknown key");
        assert_eq!(errors[0].loc.as_ref().map(|l| l.line), Some(7), "{errors:?}");

        // A check serde cannot make points at its key's line.
        let empty_token = at(
            2,
            Node::Map(vec![(
                key(5, "auth"),
                at(
                    5,
                    Node::Map(vec![(
                        key(6, "bearer_tokens"),
                        at(6, Node::Seq(vec![at(6, Node::String(String::new()))])),
                    )]),
                ),
            )]),
        );
        let errors = generations.configure(&ctx("generations"), &empty_token).err().expect("empty token");
        assert_eq!(errors[0].loc.as_ref().map(|l| l.line), Some(5));
        assert!(errors[0].message.contains("bearer_tokens[0] is empty"), "{}", errors[0].message);
    }
}
