//! A fair queue for SQLite's write lock among the connections of one pool.
//!
//! SQLite lets one writer at a time into a file. Left to SQLite, writers that find the lock
//! taken wait in its busy handler, which sleeps and tries again: whoever tries at the moment
//! the lock is free gets it, and that is nearly always the connection that just committed and
//! begins its next transaction at once, while a waiter asleep in the handler keeps missing it
//! (seconds on end, up to the busy timeout). In one pool the writers need not meet in SQLite at
//! all: each takes its turn here first ([`WriteQueue::take_turn`]) and holds it from its
//! `BEGIN IMMEDIATE` to its `COMMIT` or `ROLLBACK` ([`WriteTurn`]); only the holder of the turn
//! asks SQLite for the lock, where it meets other processes' writers alone
//! ([`super::sqlite_session`]).
//!
//! Waiters line up first come, first served, and the turn goes from one writer to the next in
//! slices: a writer that lets the turn go and asks again at once takes it again until it has
//! held it for a slice — [`WRITE_SLICE`], shorter when the line is long, so that a round of the
//! whole line takes at most [`LONGEST_TURN_WAIT`] — then it is handed to the first in line,
//! which holds it for a slice of its own, and the writer that let it go lines up behind everyone
//! waiting (the first in line is also handed the turn once it has waited
//! [`LONGEST_TURN_WAIT`]). So a writer waits about [`LONGEST_TURN_WAIT`] at most, give or take
//! the transactions running when slices end, while the turn changes threads once a slice rather
//! than after every transaction: for SQLite's fastest writers (45 µs transactions on tmpfs) a
//! change after every transaction — waking the next writer's thread, whose connection then
//! reads again what the last one changed — cost 6–20% of one worker's throughput in our runs,
//! slices about half of that. Whenever the turn is let go without being handed on, the first in
//! line is woken, so a turn nobody takes again is not left idle.
//!
//! Every wait is bounded: a writer not given its turn by its deadline leaves the queue, and
//! those behind it move up.

use crate::sync::lock;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long a writer may keep the turn, taking it again each time it lets it go and asks at
/// once, while others wait; then it is handed to the first in line. With more than
/// `LONGEST_TURN_WAIT / WRITE_SLICE` writers in line, slices are shorter: a round of the whole
/// line takes [`LONGEST_TURN_WAIT`].
pub const WRITE_SLICE: Duration = Duration::from_millis(5);

/// How long a writer waits in line at most, give or take the transactions running when slices
/// end: a whole round of the line's slices, and the longest the first in line waits.
pub const LONGEST_TURN_WAIT: Duration = Duration::from_millis(20);

/// The queue: who holds the turn, and who waits for it, first come first served.
#[derive(Debug)]
pub struct WriteQueue {
    state: Mutex<QueueState>,
    slice: Duration,
}

#[derive(Debug, Default)]
struct QueueState {
    /// The ticket the next arrival draws.
    next_ticket: u64,
    /// The ticket holding the turn, if any.
    holder: Option<u64>,
    /// Writers waiting, oldest first.
    waiting: VecDeque<Waiter>,
    /// When the current slice began: when the turn last went to a writer that had waited for
    /// it, or was taken with nobody waiting.
    slice_started: Option<Instant>,
}

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    /// To wake when the turn is let go.
    thread: Thread,
    /// When it lined up.
    since: Instant,
}

/// No turn came by the deadline; the writer has left the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no turn to write came by the deadline: other writers of this process held it")]
pub struct TurnTimedOut;

impl Default for WriteQueue {
    fn default() -> Self {
        WriteQueue::with_slice(WRITE_SLICE)
    }
}

impl WriteQueue {
    /// An empty queue with the [`WRITE_SLICE`], to share among the connections of one pool.
    pub fn new() -> Arc<WriteQueue> {
        Arc::new(WriteQueue::default())
    }

    /// An empty queue whose writers keep the turn for `slice` while others wait (zero:
    /// strictly first come, first served, the turn handed on at every let-go).
    pub fn with_slice(slice: Duration) -> WriteQueue {
        WriteQueue {
            state: Mutex::new(QueueState::default()),
            slice,
        }
    }

    /// Waits for the turn until `deadline`: at once if it is free and nobody waits or the
    /// current slice is not over, otherwise in line. The turn is held until the returned
    /// [`WriteTurn`] is dropped.
    pub fn take_turn(self: &Arc<Self>, deadline: Instant) -> Result<WriteTurn, TurnTimedOut> {
        let mut state = lock(&self.state);
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        let now = Instant::now();
        if state.holder.is_none() {
            if state.waiting.is_empty() {
                state.slice_started = Some(now);
                state.holder = Some(ticket);
                return Ok(self.turn(ticket));
            }
            if !self.due_to_hand_on(&state, now) {
                state.holder = Some(ticket); // the slice goes on
                return Ok(self.turn(ticket));
            }
        }
        state.waiting.push_back(Waiter {
            ticket,
            thread: std::thread::current(),
            since: now,
        });
        loop {
            if state.holder == Some(ticket) {
                return Ok(self.turn(ticket)); // handed over by `release`
            }
            let first = state.waiting.front().map(|waiter| waiter.ticket);
            if state.holder.is_none() && first == Some(ticket) {
                state.waiting.pop_front();
                state.slice_started = Some(Instant::now());
                state.holder = Some(ticket);
                return Ok(self.turn(ticket));
            }
            let now = Instant::now();
            if now >= deadline {
                state.waiting.retain(|waiter| waiter.ticket != ticket);
                if state.holder.is_none() {
                    // The turn is free and this one was to take it: the next in line does.
                    if let Some(next) = state.waiting.front() {
                        next.thread.unpark();
                    }
                }
                return Err(TurnTimedOut);
            }
            drop(state);
            // Woken when the turn is let go (or spuriously, or by the deadline): look again.
            std::thread::park_timeout(deadline - now);
            state = lock(&self.state);
        }
    }

    /// How many writers wait for the turn (not counting its holder).
    pub fn waiting(&self) -> usize {
        lock(&self.state).waiting.len()
    }

    /// Whether a writer holds the turn.
    pub fn is_held(&self) -> bool {
        lock(&self.state).holder.is_some()
    }

    /// Whether the turn, let go now, goes to the first in line: someone waits, and the slice is
    /// over or the first in line has waited [`LONGEST_TURN_WAIT`].
    fn due_to_hand_on(&self, state: &QueueState, now: Instant) -> bool {
        let Some(first) = state.waiting.front() else {
            return false;
        };
        // The slice shrinks as the line grows, so that a whole round of it takes no longer
        // than LONGEST_TURN_WAIT.
        let slice = self
            .slice
            .min(LONGEST_TURN_WAIT / u32::try_from(state.waiting.len()).unwrap_or(u32::MAX));
        let slice_over = state
            .slice_started
            .is_none_or(|started| now.saturating_duration_since(started) >= slice);
        slice_over || now.saturating_duration_since(first.since) >= LONGEST_TURN_WAIT
    }

    fn turn(self: &Arc<Self>, ticket: u64) -> WriteTurn {
        WriteTurn {
            queue: Arc::clone(self),
            ticket,
        }
    }

    /// Lets the turn `ticket` holds go: handed to the first in line if the slice is over,
    /// otherwise free, and the first in line woken to take it unless someone asks first.
    fn release(&self, ticket: u64) {
        let mut state = lock(&self.state);
        if state.holder != Some(ticket) {
            return;
        }
        state.holder = None;
        let now = Instant::now();
        if self.due_to_hand_on(&state, now) {
            let first = state.waiting.pop_front().expect("a first in line");
            state.slice_started = Some(now);
            state.holder = Some(first.ticket);
            drop(state);
            first.thread.unpark();
        } else if let Some(first) = state.waiting.front() {
            first.thread.unpark();
        }
    }
}

/// The turn to write, held until dropped.
#[derive(Debug)]
pub struct WriteTurn {
    queue: Arc<WriteQueue>,
    ticket: u64,
}

impl Drop for WriteTurn {
    fn drop(&mut self) {
        self.queue.release(self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Far enough away never to be reached in a passing test.
    fn no_deadline() -> Instant {
        Instant::now() + Duration::from_secs(600)
    }

    /// Waits (without a bound on time: the test harness has one) until `queue` has `count`
    /// waiters.
    fn until_waiting(queue: &WriteQueue, count: usize) {
        while queue.waiting() != count {
            std::thread::yield_now();
        }
    }

    /// A queue that hands the turn on at every let-go to the first in line.
    fn strict() -> Arc<WriteQueue> {
        Arc::new(WriteQueue::with_slice(Duration::ZERO))
    }

    #[test]
    fn the_turn_is_free_at_once_and_held_until_dropped() {
        let queue = WriteQueue::new();
        let turn = queue.take_turn(no_deadline()).unwrap();
        assert!(queue.is_held());
        drop(turn);
        assert!(!queue.is_held());
        drop(queue.take_turn(no_deadline()).unwrap());
    }

    #[test]
    fn turns_are_granted_in_the_order_they_were_asked_for() {
        let queue = strict();
        let first = queue.take_turn(no_deadline()).unwrap();
        let (granted, order) = mpsc::channel();
        let waiters: Vec<_> = (0..6)
            .map(|writer| {
                let (shared, granted) = (Arc::clone(&queue), granted.clone());
                let waiter = std::thread::spawn(move || {
                    let _turn = shared.take_turn(no_deadline()).unwrap();
                    granted.send(writer).unwrap();
                });
                // Each in line before the next asks.
                until_waiting(&queue, writer + 1);
                waiter
            })
            .collect();
        drop(first);
        for waiter in waiters {
            waiter.join().unwrap();
        }
        assert_eq!(order.try_iter().collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
    }

    /// The holder of `queue`'s turn, with one other writer in line, waits `pause`, lets the
    /// turn go and asks for it again at once: who got the turn first, "other" or "holder
    /// again".
    fn order_after_the_holder_lets_go_and_asks_again(
        queue: &Arc<WriteQueue>,
        pause: Duration,
    ) -> Vec<&'static str> {
        let mut turn = queue.take_turn(no_deadline()).unwrap();
        let (granted, order) = mpsc::channel();
        let other = {
            let (queue, granted) = (Arc::clone(queue), granted.clone());
            std::thread::spawn(move || {
                let _turn = queue.take_turn(no_deadline()).unwrap();
                granted.send("other").unwrap();
            })
        };
        until_waiting(queue, 1);
        std::thread::sleep(pause);
        drop(turn);
        turn = queue.take_turn(no_deadline()).unwrap();
        granted.send("holder again").unwrap();
        drop(turn);
        other.join().unwrap();
        order.try_iter().collect()
    }

    #[test]
    fn a_writer_that_lets_go_after_its_slice_and_asks_again_goes_behind_the_one_waiting() {
        let slice = Duration::from_millis(50);
        let queue = Arc::new(WriteQueue::with_slice(slice));
        // The holder's slice is over when it lets go.
        assert_eq!(
            order_after_the_holder_lets_go_and_asks_again(&queue, slice),
            ["other", "holder again"]
        );
    }

    #[test]
    fn a_writer_within_its_slice_hands_the_turn_on_once_the_first_in_line_has_waited_the_longest() {
        let queue = Arc::new(WriteQueue::with_slice(Duration::from_secs(3600)));
        assert_eq!(
            order_after_the_holder_lets_go_and_asks_again(&queue, LONGEST_TURN_WAIT),
            ["other", "holder again"]
        );
    }

    #[test]
    fn with_no_slice_a_writer_that_lets_go_and_asks_again_goes_behind_the_one_waiting() {
        assert_eq!(
            order_after_the_holder_lets_go_and_asks_again(&strict(), Duration::ZERO),
            ["other", "holder again"]
        );
    }

    #[test]
    fn a_waiter_past_its_deadline_leaves_and_those_behind_it_move_up() {
        let queue = strict();
        let first = queue.take_turn(no_deadline()).unwrap();
        let impatient = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || queue.take_turn(Instant::now() + Duration::from_millis(20)))
        };
        until_waiting(&queue, 1);
        let patient = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || queue.take_turn(no_deadline()).map(drop))
        };
        assert_eq!(impatient.join().unwrap().err(), Some(TurnTimedOut));
        until_waiting(&queue, 1);
        drop(first);
        patient.join().unwrap().expect("the patient waiter's turn");
        assert!(!queue.is_held());
        assert_eq!(queue.waiting(), 0);
    }

    #[test]
    fn a_deadline_already_past_is_no_wait_when_the_turn_is_free() {
        let queue = strict();
        let past = Instant::now();
        let turn = queue.take_turn(past).expect("free: granted at once");
        assert_eq!(queue.take_turn(past).err(), Some(TurnTimedOut));
        assert_eq!(queue.waiting(), 0);
        drop(turn);
    }
}
