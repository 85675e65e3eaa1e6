//! Deleting delivered segment files on a thread of their own. On a filesystem mounted
//! with `discard` (common on cloud disks), unlinking a segment waits for the device to
//! trim its blocks: 12–16 ms for an 8 MiB segment on the machine the benchmarks run on.
//! The reader runs on an async runtime's worker, which must not stall that long.

use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::QueueError;

enum Job {
    Delete(PathBuf),
    /// Answered once every deletion sent before it is done.
    Barrier(Sender<()>),
}

pub(crate) struct Deleter {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// The first deletion that failed since it was last taken.
    failed: Arc<Mutex<Option<QueueError>>>,
}

impl Deleter {
    /// Starts the thread; if no thread can be started, deletes on the caller's thread.
    pub(crate) fn start() -> Deleter {
        let failed = Arc::new(Mutex::new(None));
        let (tx, rx) = mpsc::channel::<Job>();
        let record = Arc::clone(&failed);
        let thread = std::thread::Builder::new().name("gencol-queue-rm".to_owned()).spawn(move || {
            for job in rx {
                match job {
                    Job::Delete(path) => {
                        if let Err(e) = remove(&path) {
                            record.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                        }
                    }
                    Job::Barrier(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        match thread {
            Ok(thread) => Deleter { jobs: Some(tx), thread: Some(thread), failed },
            Err(_) => Deleter { jobs: None, thread: None, failed },
        }
    }

    pub(crate) fn delete(&self, path: PathBuf) {
        let sent = match &self.jobs {
            Some(jobs) => jobs.send(Job::Delete(path)).map_err(|e| match e.0 {
                Job::Delete(path) => path,
                Job::Barrier(_) => unreachable!("a delete was sent"),
            }),
            None => Err(path),
        };
        if let Err(path) = sent
            && let Err(e) = remove(&path)
        {
            self.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
        }
    }

    /// Waits until every deletion asked for so far is done.
    pub(crate) fn wait(&self) {
        let Some(jobs) = &self.jobs else { return };
        let (tx, rx) = mpsc::channel();
        if jobs.send(Job::Barrier(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// The first deletion that failed since the last call.
    pub(crate) fn take_failure(&self) -> Option<QueueError> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

fn remove(path: &PathBuf) -> Result<(), QueueError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(QueueError::io(path, e)),
        _ => Ok(()),
    }
}

impl Drop for Deleter {
    /// Finishes the deletions asked for, so a queue closed and opened again does not find
    /// a delivered segment still there.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
