//! Figures per interval of a run (a second, for `transfer`'s ticks, histogram log and plot),
//! gathered while the run goes on. Each worker records into its own [`Slots`] slot, which the
//! ticker swaps for an empty one once per interval: the scheme of CockroachDB's `workload`
//! (pkg/workload/histogram/histogram.go in cockroachdb/cockroach: a histogram per worker behind
//! its own mutex, swapped on each tick). A worker takes its own lock once per transaction, and
//! only the ticker, once per interval, ever takes it too: workers never wait on each other.

use super::runner::Tally;
use crate::sync::lock;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// One slot per worker, each alone on its cache lines so that workers recording at once do not
/// share one.
#[derive(Debug)]
pub struct Slots<I> {
    slots: Box<[Slot<I>]>,
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot<I>(Mutex<I>);

impl<I: Tally> Slots<I> {
    /// A slot for each of `workers` workers (at least one).
    pub fn new(workers: u32) -> Self {
        Slots {
            slots: (0..workers.max(1)).map(|_| Slot::default()).collect(),
        }
    }

    /// Records into `worker`'s slot (a worker number past the last records into the last slot).
    pub fn record(&self, worker: u32, record: impl FnOnce(&mut I)) {
        let index = (worker as usize).min(self.slots.len() - 1);
        record(&mut lock(&self.slots[index].0));
    }

    /// What every worker recorded since the last call, merged; each slot starts again empty.
    pub fn take(&self) -> I {
        let mut merged = I::default();
        for slot in self.slots.iter() {
            let taken = std::mem::take(&mut *lock(&slot.0));
            merged.merge(taken);
        }
        merged
    }
}

/// A last interval shorter than this (the moments the work in flight took to finish after the
/// run's time was up) is left out of what people read — printed ticks, plotted points — as
/// CockroachDB prints no tick for it: its rate would be that of a handful of transactions.
/// Its figures still count in every total, and in a histogram log.
pub const SHORTEST_SHOWN_LAST: Duration = Duration::from_millis(500);

/// When a tick falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickTime {
    /// Time since the run started, at the tick.
    pub elapsed: Duration,
    /// Time since the previous tick (or the start): the interval the tick closes.
    pub interval: Duration,
    /// Whether this is the tick after the run ended, closing its last (usually partial)
    /// interval.
    pub last: bool,
}

impl TickTime {
    /// Whether the interval is shown to people: any but a last one shorter than
    /// [`SHORTEST_SHOWN_LAST`].
    pub fn shown(&self) -> bool {
        !self.last || self.interval >= SHORTEST_SHOWN_LAST
    }
}

/// Runs `work` on this thread while another thread calls `on_tick` each time `every` has passed
/// since `started` (a tick that falls late is not made up for: the next falls on the next
/// multiple of `every`), and once more, with [`TickTime::last`], as soon as `work` has returned,
/// so that the ticks' intervals together cover the whole run.
pub fn ticking<R>(
    every: Duration,
    started: Instant,
    on_tick: impl FnMut(TickTime) + Send,
    work: impl FnOnce() -> R,
) -> R {
    let every = every.max(Duration::from_millis(1));
    let ended = (Mutex::new(false), Condvar::new());
    std::thread::scope(|scope| {
        scope.spawn(|| tick_until_ended(every, started, &ended, on_tick));
        let result = work();
        *lock(&ended.0) = true;
        ended.1.notify_all();
        result
    })
}

/// The ticker's loop: sleeps until the next tick is due or the run has ended, whichever comes
/// first.
fn tick_until_ended(
    every: Duration,
    started: Instant,
    (ended, woken): &(Mutex<bool>, Condvar),
    mut on_tick: impl FnMut(TickTime),
) {
    let mut previous = Duration::ZERO;
    let mut next = every;
    let mut has_ended = lock(ended);
    while !*has_ended {
        let elapsed = started.elapsed();
        if elapsed < next {
            has_ended = woken
                .wait_timeout(has_ended, next - elapsed)
                .map_or_else(|poisoned| poisoned.into_inner().0, |(guard, _)| guard);
            continue;
        }
        drop(has_ended);
        on_tick(TickTime {
            elapsed,
            interval: elapsed - previous,
            last: false,
        });
        previous = elapsed;
        // The next multiple of `every` after now: ticks missed while the machine was busy are
        // not made up for.
        let periods = elapsed.as_nanos() / every.as_nanos() + 1;
        next = every * u32::try_from(periods).unwrap_or(u32::MAX);
        has_ended = lock(ended);
    }
    drop(has_ended);
    let elapsed = started.elapsed();
    on_tick(TickTime {
        elapsed,
        interval: elapsed.saturating_sub(previous),
        last: true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::runner::{Flow, RunLength, Runner};

    #[derive(Debug, Default)]
    struct Count(u64);

    impl Tally for Count {
        fn merge(&mut self, other: Self) {
            self.0 += other.0;
        }
    }

    #[test]
    fn the_ticks_cover_the_run_and_take_every_record_once() {
        let slots = Slots::<Count>::new(3);
        let started = Instant::now();
        let ticks = Mutex::new(Vec::new());
        let finished = ticking(
            Duration::from_millis(20),
            started,
            |time| lock(&ticks).push((time, slots.take().0)),
            || {
                Runner::new(3, RunLength::Duration(Duration::from_millis(110))).run(
                    |job, done: &mut Count| {
                        std::thread::sleep(Duration::from_micros(200));
                        slots.record(job.worker, |count| count.0 += 1);
                        done.0 += 1;
                        Flow::Continue
                    },
                )
            },
        );
        let ticks = lock(&ticks);
        let (last, _) = ticks.last().expect("at least the last tick");
        assert!(last.last, "the last tick closes the run: {ticks:?}");
        assert_eq!(
            ticks.iter().filter(|(time, _)| time.last).count(),
            1,
            "{ticks:?}"
        );
        assert!(ticks.len() >= 4, "ticks every 20 ms over 110 ms: {ticks:?}");
        let recorded: u64 = ticks.iter().map(|(_, count)| count).sum();
        assert_eq!(recorded, finished.tally.0, "each record in one tick");
        let covered: Duration = ticks.iter().map(|(time, _)| time.interval).sum();
        assert_eq!(covered, last.elapsed, "the intervals add up to the run");
        assert!(last.elapsed >= finished.elapsed, "{last:?} {finished:?}");
    }

    #[test]
    fn a_run_shorter_than_a_tick_has_only_the_last() {
        let mut times = Vec::new();
        let value = ticking(
            Duration::from_secs(60),
            Instant::now(),
            |time| times.push(time),
            || 7,
        );
        assert_eq!(value, 7);
        assert_eq!(times.len(), 1, "{times:?}");
        assert!(times[0].last && times[0].interval == times[0].elapsed);
        assert!(times[0].elapsed < Duration::from_secs(5), "not a minute");
    }
}
