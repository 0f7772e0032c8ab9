//! Client-chosen ids: every row roachbank writes gets an id drawn here, before its transaction
//! starts, so that a commit whose outcome is unknown can be looked up by those ids and settled
//! exactly once. The ranges never meet:
//!
//! * accounts: `[0, ID_SPACE)`, as in the tutorial, a seed's spread evenly
//!   ([`AccountIdSlices`]);
//! * the ledger (`transfers`): negative ids are the opening deposits the ledger migration wrote
//!   for accounts that predate it; a seed's deposits take a block
//!   `[slot · 2^32, slot · 2^32 + N)` for a random slot in `[1, 2^30)`; a transfer takes one
//!   random id in `[2^62, 2^63)`;
//! * points: `slot · 2^32 + row index`, one random slot in `[1, 2^30)` per run.

use rand::Rng;
use std::sync::atomic::{AtomicI64, Ordering};

/// New account ids are drawn from `[0, ID_SPACE)`, as in the tutorial.
pub const ID_SPACE: i64 = 1_000_000_000;

/// Most points one run may add: the row index lives in the low 32 bits of each id.
pub const MAX_POINTS_PER_RUN: u64 = 1 << 32;

/// A `points` run whose id slot collides with another run's draws a new slot at most this
/// often.
pub const MAX_SLOT_REDRAWS: u32 = 8;

/// A random id for a new account, in `[0, ID_SPACE)`.
pub fn random_account_id(rng: &mut impl Rng) -> i64 {
    rng.random_range(0..ID_SPACE)
}

/// The id space cut into equal slices, one per account a seed creates: each new account's id is
/// drawn at random inside its own slice, so a seed's ids are random yet evenly spread.
///
/// Why: a transfer picks an account as the first id at or after a random point (in the
/// database, so that it works on any table and across processes), which picks each account with
/// a probability proportional to the gap before its id. With ids drawn from the whole space
/// those gaps vary as much as they average (exponentially distributed), so some accounts are
/// picked several times as often as others and two concurrent transfers meet on an account
/// about twice as often as with uniform picks (the expected sum of the squared pick
/// probabilities is 2/N instead of 1/N). One id per slice keeps every gap between 0 and two
/// slices (mean one slice, variance 1/6 of a slice squared: 1.17/N), so the picks are close to
/// the tutorial's uniform `random.choice` and conflicts between transfers about halve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountIdSlices {
    slices: u64,
}

impl AccountIdSlices {
    /// `[0, ID_SPACE)` cut into `slices` slices (at least one).
    pub fn new(slices: u64) -> Self {
        AccountIdSlices {
            slices: slices.max(1),
        }
    }

    /// The number of slices.
    pub fn count(&self) -> u64 {
        self.slices
    }

    /// The ids of slice `index` (taken modulo the number of slices).
    pub fn slice(&self, index: u64) -> std::ops::Range<i64> {
        let index = u128::from(index % self.slices);
        let space = ID_SPACE as u128;
        let bound = |i: u128| (i * space / u128::from(self.slices)) as i64;
        bound(index)..bound(index + 1).max(bound(index) + 1)
    }

    /// A random id in slice `index`.
    pub fn draw(&self, index: u64, rng: &mut impl Rng) -> i64 {
        rng.random_range(self.slice(index))
    }
}

/// A random 30-bit slot, never 0: the high bits of a block of ids.
fn random_slot() -> i64 {
    rand::rng().random_range(1..(1i64 << 30))
}

/// Client-chosen ledger ids: a block of them for a seed's deposits, or one for a transfer (see
/// the module's documentation for the ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerIds(i64);

impl LedgerIds {
    /// A fresh block for a seed's deposits.
    pub fn for_deposits() -> Self {
        LedgerIds(random_slot() << 32)
    }

    /// A fresh id for one transfer.
    pub fn for_transfer() -> Self {
        LedgerIds(rand::rng().random_range((1i64 << 62)..i64::MAX))
    }

    /// The block `n` ids further on: the deposits of a seed's later chunk.
    pub fn offset(self, n: u64) -> Self {
        LedgerIds(self.0 + i64::try_from(n).unwrap_or(i64::MAX - self.0))
    }

    /// The first (for a transfer, the only) id.
    pub fn first(self) -> i64 {
        self.0
    }
}

/// The ids of one `points` run, shared by its loaders: a random 30-bit slot in the high bits,
/// the row's index in the low 32. If another run holds the same slot, [`PointIds::redraw`]
/// moves the rest of this run to a new one.
#[derive(Debug)]
pub struct PointIds(AtomicI64);

impl PointIds {
    /// A fresh slot for a run.
    pub fn for_run() -> Self {
        PointIds(AtomicI64::new(random_slot()))
    }

    /// The ids of rows `first..first + rows` under the current slot.
    pub fn ids(&self, first: u64, rows: u64) -> impl Iterator<Item = i64> {
        let slot = self.0.load(Ordering::Relaxed);
        (first..first + rows).map(move |index| (slot << 32) | index as i64)
    }

    /// Draws a new slot for the chunks that start from now on.
    pub fn redraw(&self) {
        self.0.store(random_slot(), Ordering::Relaxed);
    }
}
