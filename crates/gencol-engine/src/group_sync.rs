//! Group commit: many writers, one fsync. A writer appends (a cheap `write`), then hands
//! its acknowledgement to [`GroupSync::hold`]; a thread runs the sync and releases
//! everyone who registered before it started. While one fsync runs, the records written
//! meanwhile gather and share the next one, so at load the cost per record shrinks as
//! the load grows.
//!
//! Every group sync whose acknowledgements wait for it (`queue.sync: always`, a
//! `hierarchy` journal not riding on the queues) is run by one thread of the process: a round takes everyone
//! waiting on any file and syncs each file that has waiters, one after the other, then
//! releases them. A request that wrote a disk queue record and a journal entry thus wakes
//! one thread once, not two, and each file's fsync is shared by the requests of a longer
//! round (scenario A, batch 1: 95 -> 83 us of CPU a generation; docs/durability.md).
//! A timed sync (`queue.sync: <duration>`) keeps a thread of its own.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::consumer::AckToken;

/// Makes everything written so far durable (e.g. `fdatasync` of the files written).
pub type SyncFn = Box<dyn FnMut() -> std::io::Result<()> + Send>;

/// A file's (or a set of files') group commit.
pub struct GroupSync {
    member: Arc<Member>,
    /// The thread of a timed sync, which runs this member alone.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// One group sync: its sync, and the acknowledgements waiting for it.
struct Member {
    name: String,
    sync: Mutex<Option<SyncFn>>,
    state: Mutex<State>,
    /// Signalled when the member's last sync (at [`GroupSync::stop`]) is done.
    stopped: Condvar,
    /// How the member's thread is told there is work: the shared syncer, or its own.
    wake: Wake,
}

enum Wake {
    Shared,
    Own(Condvar),
}

#[derive(Default)]
struct State {
    waiting: Vec<AckToken>,
    stop: bool,
    /// The last sync after `stop` has run; the sync was dropped.
    done: bool,
    /// In the shared syncer's list of members to sync.
    queued: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its state whole (a list and flags).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long the sync thread waits before a round when the last round had at least
/// [`LINGER_FROM`] waiters on one file. Such a round means requests arrive while fsyncs
/// run, so waiting lets more of them share the next fsync instead of paying for one each,
/// which leaves the core to the requests. After a round of one waiter (an idle or lightly
/// loaded gencol) the next round starts at once. Measured (gencol-bench, scenario A, disk
/// queue, one core): 500 us took batch 1 from 50% to 55% of the memory queue's
/// generations/s and batch 10 from 61% to 65% (one run each); with the journal riding on
/// the queues, 1 ms against 500 us (two alternating runs each): batch 1 65/68% against
/// 61/60%, batch 10 71/69% against 68/70%, scenario C at 2,500/s p99 3.38/2.53 ms against
/// 2.13/2.04 ms (target 5 ms).
const LINGER: Duration = Duration::from_micros(1000);
const LINGER_FROM: usize = 2;

/// The process's sync thread and the members it has to sync.
struct Syncer {
    pending: Mutex<Vec<Arc<Member>>>,
    wake: Condvar,
}

/// The process's sync thread, started by the first group sync that needs it.
fn syncer() -> std::io::Result<&'static Syncer> {
    static SYNCER: OnceLock<Result<&'static Syncer, String>> = OnceLock::new();
    let started = SYNCER.get_or_init(|| {
        let syncer: &'static Syncer =
            Box::leak(Box::new(Syncer { pending: Mutex::new(Vec::new()), wake: Condvar::new() }));
        std::thread::Builder::new()
            .name("gencol-fsync".to_owned())
            .spawn(move || syncer.run())
            .map(|_| syncer)
            .map_err(|e| e.to_string())
    });
    started.clone().map_err(|e| std::io::Error::other(format!("cannot start the fsync thread: {e}")))
}

impl Syncer {
    fn run(&self) {
        let mut last_round = 0;
        loop {
            {
                let mut pending = lock(&self.pending);
                while pending.is_empty() {
                    pending = self.wake.wait(pending).unwrap_or_else(|p| p.into_inner());
                }
            }
            // Under load, wait a little for more waiters to join this round: fewer, larger
            // fsyncs leave the core to the requests (see `LINGER`).
            if last_round >= LINGER_FROM {
                std::thread::sleep(LINGER);
            }
            let members = std::mem::take(&mut *lock(&self.pending));
            // Every member's waiters are taken before any sync of the round starts, so
            // each sync covers what its waiters wrote.
            let rounds: Vec<_> = members
                .into_iter()
                .map(|m| {
                    let (waiting, stop) = {
                        let mut s = lock(&m.state);
                        s.queued = false;
                        (std::mem::take(&mut s.waiting), s.stop)
                    };
                    (m, waiting, stop)
                })
                .collect();
            last_round = rounds.iter().map(|(_, waiting, _)| waiting.len()).max().unwrap_or(0);
            for (member, waiting, stop) in rounds {
                member.sync_once(waiting, stop);
            }
        }
    }

    fn queue(&self, member: &Arc<Member>) {
        lock(&self.pending).push(member.clone());
        self.wake.notify_one();
    }
}

impl Member {
    /// Runs the sync for `waiting` (failing them when it fails); after the last one
    /// (`stop`), drops the sync and tells [`GroupSync::stop`].
    fn sync_once(&self, waiting: Vec<AckToken>, stop: bool) {
        // A panic in a sync is a failed sync: its waiters get a 503, never a 202 for what
        // may not be on disk, and the thread goes on syncing the other files.
        let result = match lock(&self.sync).as_mut() {
            Some(sync) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(sync))
                .unwrap_or_else(|_| Err(std::io::Error::other("the fsync panicked"))),
            None => Ok(()),
        };
        if let Err(e) = result {
            tracing::error!("fsync of {} failed (whatever waited for it is answered 503): {e}", self.name);
            let reason = format!("{} could not be fsynced: {e}", self.name);
            waiting.iter().for_each(|ack| ack.fail(&reason));
        }
        // Dropping a token acknowledges (when it is the last copy of it).
        drop(waiting);
        if stop {
            // Dropped here, so the files it holds are closed once `stop` returns.
            drop(lock(&self.sync).take());
            lock(&self.state).done = true;
            self.stopped.notify_all();
        }
    }
}

impl GroupSync {
    /// Starts the group sync. `every`: a timed sync (for `queue.sync: <duration>`, where
    /// acknowledgements are not held) on a thread of its own, which also syncs on this
    /// timer when nobody waits; without it, the process's sync thread runs it.
    pub fn start(name: &str, sync: SyncFn, every: Option<Duration>) -> std::io::Result<GroupSync> {
        let member = Arc::new(Member {
            name: name.to_owned(),
            sync: Mutex::new(Some(sync)),
            state: Mutex::new(State::default()),
            stopped: Condvar::new(),
            wake: if every.is_some() { Wake::Own(Condvar::new()) } else { Wake::Shared },
        });
        let thread = match every {
            None => {
                syncer()?;
                None
            }
            Some(every) => {
                let m = member.clone();
                Some(std::thread::Builder::new().name("gencol-fsync".to_owned()).spawn(move || m.run_own(every))?)
            }
        };
        Ok(GroupSync { member, thread: Mutex::new(thread) })
    }

    /// Holds every ack until a sync that starts after this call has finished (fails them
    /// once stopped: nothing will sync any more). Holding a group at once lets it share
    /// one sync.
    pub fn hold(&self, acks: impl IntoIterator<Item = AckToken>) {
        let m = &self.member;
        let mut s = lock(&m.state);
        if s.stop {
            drop(s);
            acks.into_iter().for_each(|ack| ack.fail("the disk queue is closed"));
            return;
        }
        let before = s.waiting.len();
        s.waiting.extend(acks);
        if s.waiting.len() == before {
            return;
        }
        self.wake(s);
    }

    /// Tells the member's thread there is work (`s` is its state, locked).
    fn wake(&self, mut s: MutexGuard<'_, State>) {
        let m = &self.member;
        match &m.wake {
            Wake::Own(wake) => {
                drop(s);
                wake.notify_one();
            }
            Wake::Shared => {
                if !std::mem::replace(&mut s.queued, true) {
                    drop(s);
                    // Started when this member was (`start` fails otherwise).
                    if let Ok(syncer) = syncer() {
                        syncer.queue(m);
                    }
                }
            }
        }
    }

    /// Syncs once more (releasing whoever waits), then drops the sync.
    pub fn stop(&self) {
        let m = &self.member;
        let mut s = lock(&m.state);
        if s.done {
            return;
        }
        s.stop = true;
        self.wake(s);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
            return;
        }
        let mut s = lock(&m.state);
        while !s.done {
            s = m.stopped.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Member {
    /// The loop of a timed sync's own thread.
    fn run_own(&self, every: Duration) {
        let Wake::Own(wake) = &self.wake else { return };
        loop {
            let (waiting, stop) = {
                let mut s = lock(&self.state);
                if !s.stop && s.waiting.is_empty() {
                    s = wake.wait_timeout(s, every).map(|(s, _)| s).unwrap_or_else(|p| p.into_inner().0);
                }
                (std::mem::take(&mut s.waiting), s.stop)
            };
            self.sync_once(waiting, stop);
            if stop {
                return;
            }
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
    async fn stop_syncs_what_waits_closes_the_file_and_refuses_later_holds() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(std::fs::File::create(dir.path().join("f")).unwrap());
        let held = file.clone();
        let sync = GroupSync::start("test", Box::new(move || held.sync_data()), None).unwrap();
        let (ack, wait) = AckToken::new();
        sync.hold([ack]);
        sync.stop();
        assert_eq!(wait.wait(Duration::from_secs(5)).await, Ok(()), "synced before stopping");
        assert_eq!(Arc::strong_count(&file), 1, "the sync (and the file it holds) was dropped");
        let (ack, wait) = AckToken::new();
        sync.hold([ack]);
        assert!(wait.wait(Duration::from_secs(5)).await.is_err(), "nothing syncs any more");
        sync.stop();
    }

    #[tokio::test]
    async fn files_synced_by_the_shared_thread_release_their_own_waiters() {
        let (a, a_syncs) = counting(Duration::from_millis(5));
        let (b, b_syncs) = counting(Duration::ZERO);
        let (ack, wait) = AckToken::new();
        // One request that wrote both files: acknowledged once both are synced.
        a.hold([ack.clone()]);
        b.hold([ack]);
        assert_eq!(wait.wait(Duration::from_secs(5)).await, Ok(()));
        assert!(a_syncs.load(Ordering::SeqCst) >= 1 && b_syncs.load(Ordering::SeqCst) >= 1);
    }

    #[tokio::test]
    async fn a_sync_that_panics_fails_its_waiters_and_the_thread_goes_on() {
        let panicking = GroupSync::start("test", Box::new(|| panic!("a bug in a sync")), None).unwrap();
        let (ack, wait) = AckToken::new();
        panicking.hold([ack]);
        let refused = wait.wait(Duration::from_secs(5)).await.unwrap_err();
        assert!(refused.contains("panicked"), "{refused}");
        let (other, syncs) = counting(Duration::ZERO);
        let (ack, wait) = AckToken::new();
        other.hold([ack]);
        assert_eq!(wait.wait(Duration::from_secs(5)).await, Ok(()), "the shared thread still syncs");
        assert!(syncs.load(Ordering::SeqCst) >= 1);
        panicking.stop();
    }

    #[tokio::test]
    async fn a_timed_sync_runs_on_its_timer_without_waiters() {
        let syncs = Arc::new(AtomicUsize::new(0));
        let counter = syncs.clone();
        let sync = GroupSync::start(
            "timed",
            Box::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }),
            Some(Duration::from_millis(5)),
        )
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while syncs.load(Ordering::SeqCst) < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(syncs.load(Ordering::SeqCst) >= 3, "synced on the timer");
        sync.stop();
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
