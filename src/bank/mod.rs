//! The tutorial's bank: create accounts with random ids and balances, move half of one random
//! account's money to another, and sum it all up. Every function runs through
//! [`run_transaction`](diesel_retry::run_transaction); money only moves together with its row in the `transfers` ledger.
//!
//! One concept per module: [`seed`](mod@seed) (create accounts), [`accounts`] (pick, balance), [`transfer`](mod@transfer) (in
//! both styles, the tutorial's transaction and one statement, each with its SQL), the
//! ledger [`audit`], [`points`] (one chunk of the "large transactions" example), the
//! client-chosen [`ids`] that make each of them exactly once, and [`BankError`]. Runs of many
//! transfers or chunks at once are in [`crate::workload`].

pub mod accounts;
pub mod audit;
mod error;
pub mod ids;
pub mod points;
pub mod seed;
pub mod transfer;

pub use accounts::{balance, count_accounts_up_to, pick_random_account, BalanceSummary};
pub use error::BankError;
pub use ids::{AccountIdSlices, DepositIds, LedgerIds, ID_SHARDS, ID_SPACE};
pub use seed::{
    create_random_accounts, create_random_accounts_on, seed, seed_chunk_size, SeedError,
    SeedReport, COCKROACH_SEED_CHUNK, MAX_SEED_ACCOUNTS, MAX_SLICE_DRAWS, OPENING_BALANCE_SPACE,
    SEED_STEP_ACCOUNTS,
};
pub use transfer::{transfer, transfer_funds_randomly, transfer_in_style, Transfer, TransferStyle};
