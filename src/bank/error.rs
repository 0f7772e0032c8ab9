//! Why a bank operation failed.

use diesel_retry::DatabaseErrorSource;

/// Why a bank operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// The database refused or failed a statement.
    #[error("{0}")]
    Database(#[from] diesel::result::Error),
    /// A transfer needs two distinct accounts.
    #[error(
        "the bank has fewer than two accounts to transfer between: run `roachbank seed` first"
    )]
    NotEnoughAccounts,
    /// The tutorial's balance check (cannot trigger for half a balance, kept for fidelity).
    #[error("insufficient funds in account {account}: balance {balance}, transfer {amount}")]
    InsufficientFunds {
        /// The source account.
        account: i64,
        /// Its balance.
        balance: i64,
        /// The amount asked for.
        amount: i64,
    },
    /// The operation cannot run on this database.
    #[error("{0}")]
    Unsupported(String),
    /// An account vanished between being picked and being credited.
    #[error("account {0} does not exist")]
    MissingAccount(i64),
}

impl DatabaseErrorSource for BankError {
    fn database_error(&self) -> Option<&diesel::result::Error> {
        match self {
            BankError::Database(error) => Some(error),
            _ => None,
        }
    }
}
