//! The one workload runner: `workers` threads take jobs from a shared counter until the run's
//! length is reached, it is cancelled, or a job asks it to stop; each worker keeps its own
//! figures (no lock between jobs), merged when it is done. A job that panics stops the run and
//! is reported, with the figures its worker had gathered until then.

use crate::sync::{into_inner, lock};
use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a run goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunLength {
    /// This many jobs (each committed or failed).
    Count(u64),
    /// Start jobs until this much time has passed.
    Duration(Duration),
}

impl From<u64> for RunLength {
    fn from(count: u64) -> Self {
        RunLength::Count(count)
    }
}

/// What a job tells the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on with the next job.
    Continue,
    /// Start no more jobs, on any worker; those in flight run to their end.
    Stop,
}

/// One job as the runner hands it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    /// Its index: 0, 1, 2, … in the order jobs are taken, over all workers.
    pub index: u64,
    /// The worker running it, in `0..workers`: a worker's own slot in figures kept per worker
    /// (see [`Slots`](super::interval::Slots)).
    pub worker: u32,
}

/// One worker's figures, merged into the run's when the workers are done.
pub trait Tally: Default + Send {
    /// Adds another worker's figures to these.
    fn merge(&mut self, other: Self);
}

/// Workers panicked: a bug. The job each was doing may or may not have committed, and the run
/// stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{workers} worker{} panicked (a bug; what {} was doing may or may not have committed): \
     {message}",
    if *.workers == 1 { "" } else { "s" },
    if *.workers == 1 { "it" } else { "they" }
)]
pub struct WorkerPanicked {
    /// How many workers panicked.
    pub workers: u32,
    /// The first one's panic message.
    pub message: String,
}

/// How a run ended.
#[derive(Debug)]
pub struct Finished<T> {
    /// Every worker's figures, merged (a panicked worker's until its panic).
    pub tally: T,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Workers that panicked, if any did.
    pub panicked: Option<WorkerPanicked>,
}

/// The first of the errors the workers of a run report (an error met on the way, kept for the
/// report while the run goes on or stops): one lock, taken only when there is an error.
#[derive(Debug)]
pub struct FirstError<E>(Mutex<Option<E>>);

impl<E> Default for FirstError<E> {
    fn default() -> Self {
        FirstError(Mutex::new(None))
    }
}

impl<E> FirstError<E> {
    /// Keeps `error` if it is the first.
    pub fn record(&self, error: E) {
        lock(&self.0).get_or_insert(error);
    }

    /// The first error, if there was one.
    pub fn into_inner(self) -> Option<E> {
        into_inner(self.0)
    }
}

/// A run: how many workers, for how long, and what else stops it.
#[derive(Debug, Clone, Copy)]
pub struct Runner<'c> {
    workers: u32,
    length: RunLength,
    cancel: Option<&'c AtomicBool>,
}

impl<'c> Runner<'c> {
    /// A run of `length` on `workers` threads (at least one).
    pub fn new(workers: u32, length: RunLength) -> Self {
        Runner {
            workers: workers.max(1),
            length,
            cancel: None,
        }
    }

    /// Also ends the run once `cancel` is set (by a signal handler, another thread, …): no job
    /// starts after that, while those in flight run to their end.
    pub fn cancel(self, cancel: &'c AtomicBool) -> Self {
        Runner {
            cancel: Some(cancel),
            ..self
        }
    }

    /// Runs `job` on every worker until the run's length is reached, it is cancelled, or a job
    /// returns [`Flow::Stop`]. Each call gets the [`Job`] (its index and its worker's number)
    /// and its worker's own [`Tally`].
    ///
    /// A job that panics stops the run like [`Flow::Stop`]; its worker's figures so far are
    /// kept and the panic is reported in [`Finished::panicked`]. The panic message is also
    /// printed on stderr by the process's panic hook, as for any panic.
    pub fn run<T, F>(&self, job: F) -> Finished<T>
    where
        T: Tally,
        F: Fn(Job, &mut T) -> Flow + Sync,
    {
        let started = Instant::now();
        let next = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let panicked = Mutex::new(None::<WorkerPanicked>);
        let another = || -> Option<u64> {
            if stop.load(Ordering::Relaxed)
                || self
                    .cancel
                    .is_some_and(|cancel| cancel.load(Ordering::SeqCst))
            {
                return None;
            }
            let index = next.fetch_add(1, Ordering::Relaxed);
            match self.length {
                RunLength::Count(count) => (index < count).then_some(index),
                RunLength::Duration(duration) => (started.elapsed() < duration).then_some(index),
            }
        };
        let report_panic = |payload: Box<dyn Any + Send>| {
            stop.store(true, Ordering::Relaxed);
            let mut panicked = lock(&panicked);
            match &mut *panicked {
                Some(first) => first.workers += 1,
                None => {
                    *panicked = Some(WorkerPanicked {
                        workers: 1,
                        message: panic_message(&*payload),
                    })
                }
            }
        };
        let tallies: Vec<T> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..self.workers)
                .map(|worker| {
                    let (job, another, report_panic, stop) = (&job, &another, &report_panic, &stop);
                    scope.spawn(move || {
                        let mut tally = T::default();
                        while let Some(index) = another() {
                            let flow = panic::catch_unwind(AssertUnwindSafe(|| {
                                job(Job { index, worker }, &mut tally)
                            }));
                            match flow {
                                Ok(Flow::Continue) => {}
                                Ok(Flow::Stop) => {
                                    stop.store(true, Ordering::Relaxed);
                                    break;
                                }
                                Err(payload) => {
                                    report_panic(payload);
                                    break;
                                }
                            }
                        }
                        tally
                    })
                })
                .collect();
            handles
                .into_iter()
                // A job's panic is caught above; this one would be the runner's own.
                .filter_map(|handle| handle.join().map_err(report_panic).ok())
                .collect()
        });
        let mut merged = T::default();
        for tally in tallies {
            merged.merge(tally);
        }
        Finished {
            tally: merged,
            elapsed: started.elapsed(),
            panicked: into_inner(panicked),
        }
    }
}

/// The text of a panic's payload: what `panic!` was given, if it was a string.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs done by one worker.
    #[derive(Debug, Default)]
    struct Done(u64);

    impl Tally for Done {
        fn merge(&mut self, other: Self) {
            self.0 += other.0;
        }
    }

    #[test]
    fn a_counted_run_does_each_job_once_over_all_workers() {
        let seen = Mutex::new(Vec::new());
        let finished = Runner::new(4, RunLength::Count(100)).run(|job, done: &mut Done| {
            lock(&seen).push(job);
            done.0 += 1;
            Flow::Continue
        });
        let seen = into_inner(seen);
        let mut indexes: Vec<_> = seen.iter().map(|job| job.index).collect();
        indexes.sort_unstable();
        assert_eq!(indexes, (0..100).collect::<Vec<_>>());
        assert!(seen.iter().all(|job| job.worker < 4), "{seen:?}");
        assert_eq!(finished.tally.0, 100);
        assert_eq!(finished.panicked, None);
    }

    #[test]
    fn a_stop_or_a_cancel_starts_no_more_jobs() {
        let finished = Runner::new(1, RunLength::Count(100)).run(|job, done: &mut Done| {
            done.0 += 1;
            if job.index == 9 {
                Flow::Stop
            } else {
                Flow::Continue
            }
        });
        assert_eq!(finished.tally.0, 10);
        let cancel = AtomicBool::new(true);
        let finished =
            Runner::new(3, RunLength::Count(100))
                .cancel(&cancel)
                .run(|_, done: &mut Done| {
                    done.0 += 1;
                    Flow::Continue
                });
        assert_eq!(finished.tally.0, 0);
    }

    #[test]
    fn a_panicked_job_is_reported_and_its_workers_figures_are_kept() {
        let finished = Runner::new(1, RunLength::Count(100)).run(|job, done: &mut Done| {
            if job.index == 5 {
                panic!("job {} broke", job.index);
            }
            done.0 += 1;
            Flow::Continue
        });
        assert_eq!(finished.tally.0, 5, "the jobs before the panic count");
        let panicked = finished.panicked.expect("the panic is reported");
        assert_eq!(panicked.workers, 1);
        assert_eq!(panicked.message, "job 5 broke");
        assert!(
            panicked.to_string().contains("1 worker panicked"),
            "{panicked}"
        );
    }

    #[test]
    fn a_timed_run_ends_on_time() {
        let length = Duration::from_millis(50);
        let finished = Runner::new(2, RunLength::Duration(length)).run(|_, done: &mut Done| {
            std::thread::sleep(Duration::from_millis(1));
            done.0 += 1;
            Flow::Continue
        });
        assert!(finished.tally.0 > 0);
        assert!(finished.elapsed >= length && finished.elapsed < length * 10);
    }
}
