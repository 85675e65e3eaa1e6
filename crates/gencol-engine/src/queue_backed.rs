//! State kept beside the disk queues whose durability rides on theirs.
//!
//! The `hierarchy` journal of a pipeline whose every exporter has a disk queue (fsynced
//! before the 202, no routing, its own) is not fsynced before each 202: every generation a
//! 202 covers is in those queues, and after a crash the journal reads back the records it
//! may have missed (written after its last fsync) from them. That holds only while those
//! records are still there, so a disk queue forgets delivered records (writes its `ack`,
//! deletes segments) only after every such state made what it wrote so far durable:
//! [`all_durable`] before each `ack`. See docs/durability.md, "The hierarchy journal".

use std::sync::{Mutex, Weak};

/// State whose durability rides on the disk queues' (see the module docs).
pub trait QueueBacked: Send + Sync {
    /// Makes everything written so far durable. `Ok(false)`: not ready to (still reading
    /// the queues back after a start), so delivered records must not be forgotten yet.
    fn make_durable(&self) -> Result<bool, String>;
}

static BACKED: Mutex<Vec<Weak<dyn QueueBacked>>> = Mutex::new(Vec::new());

/// Registers `state` until it is dropped.
pub fn register_queue_backed(state: Weak<dyn QueueBacked>) {
    BACKED.lock().unwrap_or_else(|p| p.into_inner()).push(state);
}

/// Whether every registered state made what it wrote so far durable (run before a disk
/// queue writes down what it delivered).
pub(crate) fn all_durable() -> Result<bool, String> {
    all_of(&BACKED)
}

fn all_of(backed: &Mutex<Vec<Weak<dyn QueueBacked>>>) -> Result<bool, String> {
    let live: Vec<_> = {
        let mut backed = backed.lock().unwrap_or_else(|p| p.into_inner());
        backed.retain(|s| s.strong_count() > 0);
        backed.iter().filter_map(Weak::upgrade).collect()
    };
    let mut ready = true;
    for state in live {
        ready &= state.make_durable()?;
    }
    Ok(ready)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Counted {
        ready: bool,
        calls: AtomicUsize,
    }

    impl QueueBacked for Counted {
        fn make_durable(&self) -> Result<bool, String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(self.ready)
        }
    }

    #[test]
    fn a_state_not_ready_holds_back_and_a_dropped_one_is_forgotten() {
        // A registry of its own: the process's one is asked by every disk queue test.
        let registry = Mutex::new(Vec::new());
        let register = |s: &Arc<dyn QueueBacked>| registry.lock().unwrap().push(Arc::downgrade(s));
        let all_durable = || all_of(&registry);
        let ready: Arc<dyn QueueBacked> = Arc::new(Counted { ready: true, calls: AtomicUsize::new(0) });
        register(&ready);
        assert!(all_durable().expect("durable"));
        let waiting = Arc::new(Counted { ready: false, calls: AtomicUsize::new(0) });
        let as_backed: Arc<dyn QueueBacked> = waiting.clone();
        register(&as_backed);
        assert!(!all_durable().expect("asked"), "a state still reading back holds acknowledgements");
        assert!(waiting.calls.load(Ordering::SeqCst) >= 1);
        drop(as_backed);
        drop(waiting);
        assert!(all_durable().expect("durable"), "a dropped state no longer holds anything");
    }
}
