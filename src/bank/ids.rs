//! Client-chosen ids: every row roachbank writes gets an id drawn here, before its transaction
//! starts, so that a commit whose outcome is unknown can be looked up by those ids and settled
//! exactly once. Every id is a positive `i64` but for the ledger migration's, and the ranges
//! never meet:
//!
//! * accounts: `[0, ID_SPACE)`, as in the tutorial, a seed's spread evenly
//!   ([`AccountIdSlices`]);
//! * the ledger (`transfers`): negative ids are the opening deposits the ledger migration wrote
//!   for accounts that predate it; a seed's deposits are [`DepositIds`], in `[2^32, 2^62)`;
//!   a transfer takes one random id in `[2^62, 2^63)` ([`LedgerIds`]);
//! * points: [`PointIds`], in `[2^32, 2^62)` too (a table of their own).
//!
//! # Blocks of ids: shard, slot, index
//!
//! A seed's deposits and a `points` run's rows are numbered `0, 1, 2, …` (the row's *index*) and
//! written a chunk at a time (a `points` chunk, one INSERT or COPY; a seed's transaction), each
//! settled by a probe that counts the ids of its range. Their ids are
//!
//! ```text
//!   bit 63    62    61 … 58       57 … 32                 31 … 0
//!      0      0     shard (4)     slot (26), in [1, 2^26)  index (32)
//! ```
//!
//! * the *slot*, drawn at random once per run or seed, keeps concurrent runs apart (one whose
//!   slot another run holds meets a unique violation on its first block, since both start at
//!   index 0 under the same shard, and draws again); a slot is never 0, so every such id is at
//!   least 2^32, above `ID_SPACE`, and bit 62 stays clear, below the transfers;
//! * the *shard* ([`ID_SHARDS`] of them) is the same for every id of a *block* of consecutive
//!   indexes — whole chunks, so that each chunk's ids stay one contiguous range and its probe
//!   one `BETWEEN` — and turns with each block: block `b` under slot `s` takes shard
//!   `(s + b) mod 16`, so consecutive blocks always fall in different sixteenths of the key
//!   space, and every 16 consecutive blocks use each shard once.
//!
//! How many rows a block holds depends on the database. On CockroachDB a block is one chunk —
//! one `points` chunk, one seed transaction — so the chunks
//! a run's loaders have in flight at once, and a seed's successive transactions, write to
//! different parts of the key space. On PostgreSQL and SQLite, where spreading buys nothing, a
//! block is the whole run or seed, under one shard: the ids only grow, as before, and the B-tree
//! grows at its right edge. There a turn to a shard below rows already written inserts into
//! the middle of the B-tree, whose pages PostgreSQL then splits half and half instead of
//! leaving them 90% full (it keeps the fill factor only when it splits the rightmost page).
//! Measured here on PostgreSQL 15, 200,000 rows in 1,000-row statements under a shard per
//! statement made the primary key 7.8 MB instead of 4.5 MB, wrote 8.5% more WAL and took the
//! server 16–28% longer (fastest of 14 runs each, in either order) than under one shard.
//!
//! Why: CockroachDB keeps a table in ranges of consecutive keys, and a key that only grows
//! sends every write to the end of one range: "the system cannot find a split point in the
//! range that evenly divides the traffic, and the range cannot benefit from load-based
//! splitting. This creates a hot spot at the single range" (cockroachdb/docs
//! `src/current/v24.1/performance-best-practices-overview.md`, "Hot spots"). With the index
//! in the high bits, as before, a run's loaders all wrote at one tail. The same page's advice
//! for unique ids is a key whose "prefix … should be relatively uniformly distributed over its
//! domain" with the increasing part after it ("Use multi-column primary keys"), and its
//! hash-sharded indexes do exactly that with a hidden shard column in front of the key, 16
//! buckets by default (`hash-sharded-indexes.md`, "Shard count":
//! `sql.defaults.default_hash_sharded_index_bucket_count`, registered with 16 in
//! cockroachdb/cockroach `pkg/sql/catalog/tabledesc`): 16 tails in different parts of the key
//! space that size- and load-based splitting can put on different ranges and nodes. The shard
//! is chosen per block rather than per row (a hash-sharded index hashes each row) so that one
//! chunk stays one span: a `points` chunk is one INSERT that, in one range, CockroachDB can
//! commit in one phase without a transaction record ("if the complete transaction is only one
//! batch, the 1PC optimization … can apply on the range receiving it", cockroachdb/cockroach
//! `docs/RFCS/20180324_parallel_commit.md`), and the probe reads one span. It is turned
//! rather than hashed so that no two consecutive blocks ever share a shard. The schema is
//! unchanged: the prefix lives inside the `BIGINT` id, on every database. The account ids are
//! not touched (they are random already, [`AccountIdSlices`]), nor the transfers' (random in
//! `[2^62, 2^63)`).

use rand::Rng;
use std::sync::atomic::{AtomicI64, Ordering};

/// New account ids are drawn from `[0, ID_SPACE)`, as in the tutorial.
pub const ID_SPACE: i64 = 1_000_000_000;

/// Most points one run may add: the row index lives in the low 32 bits of each id.
pub const MAX_POINTS_PER_RUN: u64 = 1 << INDEX_BITS;

/// A `points` run whose id slot collides with another run's draws a new slot at most this
/// often.
pub const MAX_SLOT_REDRAWS: u32 = 8;

/// Shards a block id's prefix takes (see the module's documentation): CockroachDB's default
/// bucket count for hash-sharded indexes.
pub const ID_SHARDS: u64 = 16;

/// Bits of a block id below its slot: the row's index.
const INDEX_BITS: u32 = 32;
/// Bits of a block id's slot.
const SLOT_BITS: u32 = 26;
/// Where a block id's shard starts: above the slot, below bit 62 (the transfers' range).
pub const SHARD_SHIFT: u32 = INDEX_BITS + SLOT_BITS;

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

/// A random slot in `[1, 2^26)`, never 0: the middle bits of a run's or a seed's block ids.
fn random_slot() -> i64 {
    rand::rng().random_range(1..(1i64 << SLOT_BITS))
}

/// The ids of rows numbered `0, 1, 2, …` under one slot, written in blocks of `block_rows`
/// consecutive indexes, each block under one shard (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ShardedBlocks {
    /// The slot, in `[1, 2^26)`.
    slot: i64,
    /// Indexes per block (at least 1).
    block_rows: u64,
}

impl ShardedBlocks {
    /// Blocks of `block_rows` (at least 1) under a fresh random slot.
    fn fresh(block_rows: u64) -> Self {
        ShardedBlocks {
            slot: random_slot(),
            block_rows: block_rows.max(1),
        }
    }

    /// The shard of block `block`: the slot picks the first, each block takes the next, so no
    /// two consecutive blocks share one and every 16 consecutive blocks use each once.
    fn shard(self, block: u64) -> i64 {
        ((self.slot as u64 + block) % ID_SHARDS) as i64
    }

    /// The id of row `index` under the shard of block `block`.
    fn id(self, block: u64, index: u64) -> i64 {
        debug_assert!(index < MAX_POINTS_PER_RUN, "a row index fits in 32 bits");
        (self.shard(block) << SHARD_SHIFT) | (self.slot << INDEX_BITS) | index as i64
    }

    /// The id of row `index`, under the shard of the block it belongs to.
    fn id_of(self, index: u64) -> i64 {
        self.id(index / self.block_rows, index)
    }
}

/// Client-chosen ids of one transfer's ledger row (see the module's documentation for the
/// ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerIds(i64);

impl LedgerIds {
    /// A fresh id for one transfer, at random in `[2^62, 2^63)`.
    pub fn for_transfer() -> Self {
        LedgerIds(rand::rng().random_range((1i64 << 62)..i64::MAX))
    }

    /// The first (for a transfer, the only) id.
    pub fn first(self) -> i64 {
        self.0
    }
}

/// The ledger ids of one seed's deposits, from its `first` on: deposit `i` of the seed (its
/// account's slice, counted from the seed's first) has the id of index `i` under the seed's
/// slot, in blocks of the seed's transaction (see the module's documentation), so that on
/// CockroachDB each of its transactions writes its deposits under a shard of its own, one
/// contiguous range of ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepositIds {
    /// The seed's slot and block size.
    blocks: ShardedBlocks,
    /// The index of the first deposit these ids start at.
    first: u64,
}

impl DepositIds {
    /// Fresh ids for a seed whose shard turns every `block_accounts` (at least 1) deposits: a
    /// new random slot.
    pub fn for_seed(block_accounts: u64) -> Self {
        DepositIds {
            blocks: ShardedBlocks::fresh(block_accounts),
            first: 0,
        }
    }

    /// The ids `n` deposits further on: those of a seed's later transaction or step.
    pub fn offset(self, n: u64) -> Self {
        DepositIds {
            first: self.first + n,
            ..self
        }
    }

    /// The id of deposit `i`, counted from these ids' first.
    pub fn id(self, i: u64) -> i64 {
        self.blocks.id_of(self.first + i)
    }

    /// The ids of deposits `0..count` (counted from these ids' first) as inclusive ranges, one
    /// per shard they use, so at most [`ID_SHARDS`] whatever `count` (one for a seed's
    /// transaction, a block of its own): what a probe counts to find a transaction's deposits.
    /// A shard's range spans its blocks and, between them, the
    /// ids that the indexes of other shards' blocks would have under this shard — ids nobody
    /// writes, since only this seed writes under its slot (two seeds drawing one slot collide
    /// on their first deposit, both starting at index 0 under the same shard, and the later
    /// one runs again under a fresh slot).
    pub fn ranges(self, count: u64) -> Vec<std::ops::RangeInclusive<i64>> {
        if count == 0 {
            return Vec::new();
        }
        let blocks = self.blocks;
        let (first, last) = (self.first, self.first + count - 1);
        let (first_block, last_block) = (first / blocks.block_rows, last / blocks.block_rows);
        (0..ID_SHARDS as i64)
            .filter_map(|shard| {
                // The first and the last of the blocks under `shard` (one in every 16).
                let turns = |from: i64, to: i64| (to - from).rem_euclid(ID_SHARDS as i64) as u64;
                let low_block = first_block + turns(blocks.shard(first_block), shard);
                let high_block = last_block.checked_sub(turns(shard, blocks.shard(last_block)))?;
                (low_block <= high_block).then(|| {
                    let low = (low_block * blocks.block_rows).max(first);
                    let high = ((high_block + 1) * blocks.block_rows - 1).min(last);
                    blocks.id(low_block, low)..=blocks.id(high_block, high)
                })
            })
            .collect()
    }
}

/// The ids of one `points` run, shared by its loaders: rows numbered `0, 1, 2, …` under a random
/// slot, in blocks of a whole number of chunks, each block under one shard, the shard turning
/// with every block (see the module's documentation). If another run holds the same slot,
/// [`PointIds::redraw`] moves the rest of this run to a new one.
#[derive(Debug)]
pub struct PointIds {
    /// The current slot.
    slot: AtomicI64,
    /// Rows per block: block `b` holds rows `b · block_rows ..`.
    block_rows: u64,
}

impl PointIds {
    /// A fresh slot for a run whose shard turns every `block_rows` rows (at least 1): a whole
    /// number of chunks, so that no chunk straddles two blocks.
    pub fn for_run(block_rows: u64) -> Self {
        let blocks = ShardedBlocks::fresh(block_rows);
        PointIds {
            slot: AtomicI64::new(blocks.slot),
            block_rows: blocks.block_rows,
        }
    }

    /// The ids of rows `first..first + rows` under the current slot and the shard of the block
    /// row `first` is in: one contiguous range.
    pub fn ids(&self, first: u64, rows: u64) -> impl Iterator<Item = i64> {
        let blocks = ShardedBlocks {
            slot: self.slot.load(Ordering::Relaxed),
            block_rows: self.block_rows,
        };
        let block = first / self.block_rows;
        (first..first + rows).map(move |index| blocks.id(block, index))
    }

    /// Draws a new slot for the chunks that start from now on.
    pub fn redraw(&self) {
        self.slot.store(random_slot(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The shard of `id` (bits 58–61), read from the layout the module documents.
    fn shard_of(id: i64) -> i64 {
        id >> 58
    }

    #[test]
    fn block_ids_are_positive_above_the_accounts_and_below_the_transfers() {
        for _ in 0..1000 {
            let ids = PointIds::for_run(7);
            for id in ids.ids(0, 3).chain(ids.ids(MAX_POINTS_PER_RUN - 3, 3)) {
                assert!(((1 << 32)..(1 << 62)).contains(&id), "{id:#x}");
                assert!(id > ID_SPACE);
            }
            let deposits = DepositIds::for_seed(5);
            for i in [0, 1, 4, 5, 79, 80, 9_999_999] {
                let id = deposits.id(i);
                assert!(((1 << 32)..(1 << 62)).contains(&id), "{id:#x}");
                assert_eq!(id & 0xffff_ffff, i as i64, "the index in the low bits");
            }
        }
    }

    #[test]
    fn a_chunk_is_one_range_under_one_shard_and_consecutive_chunks_take_the_next_shards() {
        let ids = PointIds::for_run(10);
        let chunks: Vec<Vec<i64>> = (0..40).map(|c| ids.ids(c * 10, 10).collect()).collect();
        for (c, chunk) in chunks.iter().enumerate() {
            assert!(chunk.windows(2).all(|pair| pair[1] == pair[0] + 1), "{c}");
            assert!(chunk.iter().all(|&id| shard_of(id) == shard_of(chunk[0])));
        }
        for pair in chunks.windows(2) {
            assert_eq!(shard_of(pair[1][0]), (shard_of(pair[0][0]) + 1) % 16);
        }
        // A last, shorter chunk stays under its chunk's shard.
        let last: Vec<i64> = ids.ids(400, 3).collect();
        assert_eq!(shard_of(last[0]), (shard_of(chunks[39][0]) + 1) % 16);
    }

    /// Brute force over small blocks: the ranges of deposits `0..count` (from several firsts)
    /// hold every one of those deposits' ids, and of this seed's other ids none.
    #[test]
    fn deposit_ranges_hold_exactly_the_deposits_among_the_seeds_ids() {
        for block in [1, 3, 7] {
            let seed = DepositIds::for_seed(block);
            let all: Vec<i64> = (0..40 * block).map(|i| seed.id(i)).collect();
            for first in [0, 1, block, 5 * block + 2] {
                for count in [
                    0,
                    1,
                    2,
                    block,
                    block + 1,
                    16 * block,
                    17 * block + 1,
                    20 * block,
                ] {
                    let ids = seed.offset(first);
                    let ranges = ids.ranges(count);
                    assert!(ranges.len() <= 16);
                    let expected: BTreeSet<i64> = (0..count).map(|i| ids.id(i)).collect();
                    let found: BTreeSet<i64> = all
                        .iter()
                        .copied()
                        .filter(|id| ranges.iter().any(|range| range.contains(id)))
                        .collect();
                    assert_eq!(
                        found, expected,
                        "block {block}, first {first}, count {count}"
                    );
                    let blocks = (first + count).div_ceil(block) - first / block;
                    assert_eq!(ranges.len() as u64, blocks.min(16) * u64::from(count > 0));
                }
            }
        }
    }
}
