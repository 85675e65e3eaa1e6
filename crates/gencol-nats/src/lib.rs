//! What gencol's `nats` exporter and `nats` receiver share, so that gencol tiers can stand
//! on NATS JetStream (docs/scale-out.md): the YAML keys and the connection
//! ([`settings`]), the stream ([`stream`]), the form of a message and the partition of a
//! trace ([`wire`]), and pulling a partition as the member of a pinned priority group
//! ([`pull`]).

pub mod pull;
pub mod settings;
pub mod stream;
pub mod wire;

pub use settings::{ConsumerSettings, NatsSettings, NatsTarget, Side, configure};
