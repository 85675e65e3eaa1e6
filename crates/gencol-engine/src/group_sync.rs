//! Group commit: many writers, one fsync. A writer appends (a cheap `write`), then hands
//! its acknowledgement to [`GroupSync::hold`]; a thread of its own runs the sync and
//! releases everyone who registered before it started. While one fsync runs, the
//! records written meanwhile gather and share the next one, so at load the cost per
//! record shrinks as the load grows.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::consumer::AckToken;

/// Makes everything written so far durable (e.g. `fdatasync` of the files written).
pub type SyncFn = Box<dyn FnMut() -> std::io::Result<()> + Send>;

/// One fsync thread and the acknowledgements waiting on it.
pub struct GroupSync {
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    waiting: Vec<AckToken>,
    stop: bool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state is a list and a flag, whole after every critical section.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GroupSync {
    /// Starts the thread. `every`: also sync on this timer when nobody waits (for
    /// `queue.sync: <duration>`, where acknowledgements are not held).
    pub fn start(name: &str, mut sync: SyncFn, every: Option<Duration>) -> std::io::Result<GroupSync> {
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let state = shared.clone();
        let name = name.to_owned();
        let thread = std::thread::Builder::new().name("gencol-fsync".to_owned()).spawn(move || {
            let (state, wake) = &*state;
            loop {
                let (waiting, stop) = {
                    let mut s = lock(state);
                    while !s.stop && s.waiting.is_empty() {
                        match every {
                            None => s = wake.wait(s).unwrap_or_else(|p| p.into_inner()),
                            Some(every) => {
                                s = wake.wait_timeout(s, every).map(|(s, _)| s).unwrap_or_else(|p| p.into_inner().0);
                                break;
                            }
                        }
                    }
                    (std::mem::take(&mut s.waiting), s.stop)
                };
                // Started after the waiters were taken, so it covers what each of them wrote.
                if let Err(e) = sync() {
                    tracing::error!("fsync of {name} failed; receivers answer 503 for what it covered: {e}");
                    let reason = format!("{name} could not be fsynced: {e}");
                    waiting.iter().for_each(|ack| ack.fail(&reason));
                }
                // Dropping a token acknowledges (when it is the last copy of it).
                drop(waiting);
                if stop {
                    return;
                }
            }
        })?;
        Ok(GroupSync { shared, thread: Mutex::new(Some(thread)) })
    }

    /// Holds every ack until a sync that starts after this call has finished (fails them
    /// once stopped: nothing will sync any more). Holding a group at once lets it share
    /// one sync.
    pub fn hold(&self, acks: impl IntoIterator<Item = AckToken>) {
        let (state, wake) = &*self.shared;
        let mut s = lock(state);
        if s.stop {
            drop(s);
            acks.into_iter().for_each(|ack| ack.fail("the disk queue is closed"));
            return;
        }
        let before = s.waiting.len();
        s.waiting.extend(acks);
        let added = s.waiting.len() > before;
        drop(s);
        if added {
            wake.notify_one();
        }
    }

    /// Syncs once more (releasing whoever waits) and ends the thread.
    pub fn stop(&self) {
        let (state, wake) = &*self.shared;
        lock(state).stop = true;
        wake.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for GroupSync {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A group sync whose sync takes `takes` and is counted.
    fn counting(takes: Duration) -> (GroupSync, Arc<AtomicUsize>) {
        let syncs = Arc::new(AtomicUsize::new(0));
        let counter = syncs.clone();
        let sync = Box::new(move || {
            std::thread::sleep(takes);
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        (GroupSync::start("test", sync, None).unwrap(), syncs)
    }

    #[tokio::test]
    async fn waiters_are_released_after_a_sync_and_share_it() {
        let (sync, syncs) = counting(Duration::from_millis(20));
        let mut waits = Vec::new();
        for _ in 0..50 {
            let (ack, wait) = AckToken::new();
            sync.hold([ack]);
            waits.push(wait);
        }
        for w in waits {
            assert_eq!(w.wait(Duration::from_secs(5)).await, Ok(()));
        }
        // 50 waiters, registered while the first 20 ms sync ran: a few syncs, not 50.
        let n = syncs.load(Ordering::SeqCst);
        assert!((1..=3).contains(&n), "{n} syncs");
    }

    #[tokio::test]
    async fn a_group_held_at_once_shares_one_sync() {
        let (sync, syncs) = counting(Duration::ZERO);
        let (acks, waits): (Vec<_>, Vec<_>) = (0..16).map(|_| AckToken::new()).unzip();
        sync.hold(acks);
        for w in waits {
            assert_eq!(w.wait(Duration::from_secs(5)).await, Ok(()));
        }
        assert_eq!(syncs.load(Ordering::SeqCst), 1, "one sync for the whole group");
    }

    #[tokio::test]
    async fn a_failed_sync_fails_its_waiters_and_the_next_one_can_succeed() {
        let mut fail_next = true;
        let sync = GroupSync::start(
            "test",
            Box::new(
                move || {
                    if std::mem::take(&mut fail_next) { Err(std::io::Error::other("disk gone")) } else { Ok(()) }
                },
            ),
            None,
        )
        .unwrap();
        let (ack, wait) = AckToken::new();
        sync.hold([ack]);
        let refused = wait.wait(Duration::from_secs(5)).await.unwrap_err();
        assert!(refused.contains("disk gone"), "{refused}");
        let (ack, wait) = AckToken::new();
        sync.hold([ack]);
        assert_eq!(wait.wait(Duration::from_secs(5)).await, Ok(()));
    }
}
