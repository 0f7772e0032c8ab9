//! Whether the server keeps what it says it committed: a server that acknowledges a COMMIT
//! before the commit is on disk can lose work roachbank has already reported done if it
//! crashes. The CLI asks after a command that wrote something has succeeded, and warns once.
//!
//! * PostgreSQL: `fsync = off` (nothing is forced to disk, a crash can lose or corrupt
//!   anything) or `synchronous_commit = off` (the last moments of acknowledged commits are lost
//!   on a crash). Other values of `synchronous_commit` (`on`, `local`, `remote_write`,
//!   `remote_apply`) all flush the commit to the primary's disk before acknowledging it.
//!   Both are read on one of roachbank's own sessions, so a value set for the role, the
//!   database or in the URL's `options` counts as well as the server's.
//! * CockroachDB: the cluster setting `kv.raft_log.disable_synchronization_unsafe` (renamed
//!   `kv.raft_log.synchronization.unsafe.disabled` in newer releases; cockroachdb/cockroach
//!   `pkg/kv/kvserver/logstore/logstore.go`, `disableSyncRaftLog`): "risks data loss or data
//!   corruption on process or OS crashes". Reading a cluster setting needs the `admin` role or
//!   the `VIEWCLUSTERSETTING` / `MODIFYCLUSTERSETTING` privilege (`SHOW CLUSTER SETTING`,
//!   "Required privileges"); an ordinary user is refused, and then nothing is said.
//! * SQLite: roachbank's connections use WAL with SQLite's default `synchronous = FULL`
//!   (see `db.rs`), under which a committed transaction survives a crash: nothing to warn of.
//!
//! A warning is never worth failing a command over: any error reading the settings means no
//! warning.

use crate::db::{Database, DbConnection, Flavor};
use diesel::prelude::*;
use diesel::sql_types::Text;
use std::time::Duration;

/// How long [`durability_warning`] waits for a connection when the pool has no idle one left
/// (the command's connections broke): a warning is not worth a long wait.
const CONNECTION_WAIT: Duration = Duration::from_secs(5);

/// CockroachDB's switch that stops the Raft log from being synced to disk: its registered key,
/// which every release knows, then the name newer releases show it under.
const COCKROACH_UNSYNCED_RAFT_LOG: [&str; 2] = [
    "kv.raft_log.disable_synchronization_unsafe",
    "kv.raft_log.synchronization.unsafe.disabled",
];

/// The one line to print when `db`'s server does not make commits durable, or `None` when it
/// does, when it cannot tell (a setting it may not read, a connection that failed), and always
/// on SQLite. Reads the settings on a connection of `db`'s pool: an idle one, or a new one
/// within a few seconds.
///
/// The line reads like `warning: the server does not make commits durable (fsync = off,
/// synchronous_commit = off): what roachbank reported done may be lost if the server crashes`,
/// naming each setting found off.
pub fn durability_warning(db: &Database) -> Option<String> {
    if db.flavor() == Flavor::Sqlite {
        return None;
    }
    let pool = db.pool();
    let mut conn = pool
        .try_get()
        .or_else(|| pool.get_timeout(CONNECTION_WAIT).ok())?;
    durability_warning_on(&mut conn, db.flavor())
}

/// [`durability_warning`] on a connection of the caller's (`init` has no pool); `flavor` is the
/// server's.
pub fn durability_warning_on(conn: &mut DbConnection, flavor: Flavor) -> Option<String> {
    let DbConnection::Postgresql(pg) = conn else {
        return None;
    };
    let unsafe_settings = match flavor {
        Flavor::PostgreSql => postgresql_unsafe_settings(pg)?,
        Flavor::CockroachDb => cockroachdb_unsafe_settings(pg)?,
        Flavor::Sqlite => return None,
    };
    warning_line(&unsafe_settings)
}

/// The warning naming `settings` (`name = value`), or `None` if there are none.
fn warning_line(settings: &[String]) -> Option<String> {
    if settings.is_empty() {
        return None;
    }
    Some(format!(
        "warning: the server does not make commits durable ({}): what roachbank reported done may be lost if the server crashes",
        settings.join(", ")
    ))
}

#[derive(QueryableByName)]
struct PostgresqlDurability {
    #[diesel(sql_type = Text)]
    fsync: String,
    #[diesel(sql_type = Text)]
    synchronous_commit: String,
}

/// `fsync = off` and `synchronous_commit = off`, those that are; `None` if they cannot be read.
/// `current_setting(name)` is `SHOW name` as a value, both in one round trip.
fn postgresql_unsafe_settings(pg: &mut PgConnection) -> Option<Vec<String>> {
    let found: PostgresqlDurability = diesel::sql_query(
        "SELECT current_setting('fsync') AS fsync, \
                current_setting('synchronous_commit') AS synchronous_commit",
    )
    .get_result(pg)
    .ok()?;
    Some(
        [
            ("fsync", found.fsync),
            ("synchronous_commit", found.synchronous_commit),
        ]
        .into_iter()
        .filter(|(_, value)| value.trim().eq_ignore_ascii_case("off"))
        .map(|(name, value)| format!("{name} = {}", value.trim()))
        .collect(),
    )
}

#[derive(QueryableByName)]
struct ClusterSetting {
    #[diesel(sql_type = Text)]
    setting_value: String,
}

/// The Raft-log setting if it is `true`; `None` if it cannot be read under either name (no
/// right to read cluster settings, a virtual cluster that hides system settings, an unknown
/// name).
fn cockroachdb_unsafe_settings(pg: &mut PgConnection) -> Option<Vec<String>> {
    COCKROACH_UNSYNCED_RAFT_LOG.iter().find_map(|name| {
        // The statement as a row source, its one column renamed: the column SHOW gives is
        // named after the setting, and typed as it is (BOOL here).
        let sql = format!(
            "SELECT s.setting_value::STRING AS setting_value \
             FROM [SHOW CLUSTER SETTING {name}] AS s (setting_value)"
        );
        let found: ClusterSetting = diesel::sql_query(sql).get_result(pg).ok()?;
        Some(if found.setting_value.trim().eq_ignore_ascii_case("true") {
            vec![format!("{name} = true")]
        } else {
            Vec::new()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_setting_off_no_warning() {
        assert_eq!(warning_line(&[]), None);
    }

    #[test]
    fn the_warning_is_one_line_naming_each_setting_off() {
        let line = warning_line(&["fsync = off".into(), "synchronous_commit = off".into()])
            .expect("a warning");
        assert!(line.starts_with("warning: the server does not make commits durable"));
        assert!(
            line.contains("(fsync = off, synchronous_commit = off)"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }
}
