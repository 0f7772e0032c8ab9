//! [`InitReport`]: what `init` did, object by object.

use crate::db::Flavor;

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// It did not exist and was created.
    Created,
    /// It existed already; left alone.
    AlreadyThere,
    /// The privileges were missing and were granted.
    Granted,
    /// The privileges were held already; nothing granted.
    AlreadyHeld,
    /// An idempotent statement was issued without checking first (CockroachDB's GRANT).
    Ensured,
}

impl StepOutcome {
    /// Whether this outcome changed the database.
    pub fn is_change(self) -> bool {
        matches!(self, StepOutcome::Created | StepOutcome::Granted)
    }
}

impl std::fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StepOutcome::Created => "created",
            StepOutcome::AlreadyThere => "already there",
            StepOutcome::Granted => "granted",
            StepOutcome::AlreadyHeld => "already held",
            StepOutcome::Ensured => "ensured (GRANT is idempotent)",
        })
    }
}

/// One object `init` looked after, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitStep {
    /// The object, e.g. `user "maxroach"`.
    pub subject: String,
    /// What happened to it.
    pub outcome: StepOutcome,
}

/// What `init` did.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The engine set up.
    pub flavor: Flavor,
    /// The user the migrations ran as (`None` on SQLite).
    pub user: Option<String>,
    /// Each object looked after, in order.
    pub steps: Vec<InitStep>,
    /// Migrations applied by this run, as the user.
    pub migrations_applied: usize,
}

impl InitReport {
    /// How many changes this run made (objects created, privileges granted, migrations
    /// applied); 0 on a second run.
    pub fn changes(&self) -> usize {
        self.steps
            .iter()
            .filter(|step| step.outcome.is_change())
            .count()
            + self.migrations_applied
    }
}

/// One [`InitStep`]: `subject` and what became of it.
pub(super) fn step(subject: String, outcome: StepOutcome) -> InitStep {
    InitStep { subject, outcome }
}
