//! The next step a failure makes obvious, said at the end of its line: a database or a user
//! that does not exist yet is what `init` creates (a refused password may be a user that does
//! not exist yet); a password the server asks for goes in the URL, PGPASSWORD or ~/.pgpass; a
//! SQLite file cannot be made in a directory that does not exist.

use roachbank::db::config::{Backend, DatabaseConfig};

/// The hint after a command that needs a bank found none.
pub const SEED_FIRST: &str = "run `roachbank seed` first";

/// What `init` needs to be told, for a hint that sends the user there.
const WITH_ADMIN_URL: &str = "with an admin URL: --admin-url or ADMIN_DATABASE_URL";

/// How to give the password a server asks for and a URL did not carry.
const GIVE_A_PASSWORD: &str = "the server asks for a password: give it in the URL \
     (postgresql://USER:PASSWORD@HOST/DATABASE), in PGPASSWORD or in ~/.pgpass";

/// The hint after a connection that failed because it had no password to give (libpq's
/// `fe_sendauth: no password supplied`): where a password goes. For any command, `init`'s
/// admin URL included.
pub fn after_no_password(error: &str) -> Option<String> {
    error
        .contains("no password supplied")
        .then(|| GIVE_A_PASSWORD.to_string())
}

/// The hint for a command other than `init` that could not open `config`'s database, `error`
/// being the failure's text; `None` when the next step is not obvious.
pub fn after_failed_open(error: &str, config: &DatabaseConfig) -> Option<String> {
    match config.backend() {
        Backend::Postgresql => {
            let database = config.database_name();
            let user = config.user();
            if let Some(hint) = after_no_password(error) {
                return Some(hint);
            }
            // PostgreSQL says this whether the password is wrong or the role does not exist
            // (it does not tell which to a client that has not logged in).
            let refused = format!(
                "password authentication failed for user \"{}\"",
                user.as_deref().unwrap_or_default()
            );
            if user.is_some() && error.contains(&refused) {
                return Some(format!(
                    "check the URL's password; if the user does not exist yet, run `roachbank \
                     init` to create it with that password ({WITH_ADMIN_URL})"
                ));
            }
            if undefined(error, "database").is_some_and(|name| Some(name) == database.as_deref()) {
                return Some(format!(
                    "run `roachbank init` to create it ({WITH_ADMIN_URL})"
                ));
            }
            // PostgreSQL: `role "…" does not exist`; CockroachDB: `role/user "…" does not
            // exist` (pkg/sql/sqlerrors/errors.go, NewUndefinedUserError).
            let missing_user = undefined(error, "role").or_else(|| undefined(error, "role/user"));
            if missing_user.is_some_and(|name| Some(name) == user.as_deref()) {
                return Some(format!(
                    "run `roachbank init` to create the user and its database ({WITH_ADMIN_URL})"
                ));
            }
            None
        }
        Backend::Sqlite => {
            let path = config.sqlite_path()?;
            let directory = path.parent().filter(|dir| !dir.as_os_str().is_empty())?;
            (!directory.exists())
                .then(|| format!("the directory {} does not exist", directory.display()))
        }
    }
}

/// The name in `error`'s `KIND "NAME" does not exist`: how PostgreSQL reports a missing
/// database (SQLSTATE 3D000) or role, and CockroachDB a missing database
/// (pkg/sql/sqlerrors/errors.go, NewUndefinedDatabaseError: `database %q does not exist`).
fn undefined<'e>(error: &'e str, kind: &str) -> Option<&'e str> {
    let opening = format!("{kind} \"");
    error.match_indices(&opening).find_map(|(at, _)| {
        // The kind must be a word of its own ("role", not the end of "user/role").
        let preceded = error[..at].chars().next_back();
        if preceded.is_some_and(|c| c.is_alphanumeric() || c == '/' || c == '_') {
            return None;
        }
        let rest = &error[at + opening.len()..];
        let (name, after) = rest.split_once('"')?;
        after.starts_with(" does not exist").then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use roachbank::db::config::UrlSource;

    fn server(url: &str) -> DatabaseConfig {
        DatabaseConfig::parse(url, UrlSource::Flag).expect("a server URL")
    }

    #[test]
    fn a_missing_database_or_user_of_the_url_points_to_init() {
        let config = server("postgresql://maxroach@localhost:26257/bank");
        let database = "cannot connect to postgresql://maxroach@localhost:26257/bank: \
                        connection to server at \"localhost\" (::1), port 26257 failed: \
                        FATAL: database \"bank\" does not exist";
        let hint = after_failed_open(database, &config).expect("a hint");
        assert!(
            hint.starts_with("run `roachbank init` to create it"),
            "{hint}"
        );
        for user in [
            "… failed: FATAL: role \"maxroach\" does not exist",
            "applying migrations failed: role/user \"maxroach\" does not exist",
        ] {
            let hint = after_failed_open(user, &config).expect("a hint");
            assert!(hint.contains("create the user and its database"), "{hint}");
        }
    }

    #[test]
    fn a_refused_password_of_the_urls_user_points_to_init_and_a_missing_one_to_where_it_goes() {
        let config = server("postgresql://maxroach@localhost:26257/bank");
        let refused = "cannot connect to postgresql://maxroach@localhost:26257/bank: connection \
                       to server at \"localhost\" (::1), port 26257 failed: FATAL: password \
                       authentication failed for user \"maxroach\"";
        let hint = after_failed_open(refused, &config).expect("a hint");
        assert!(
            hint.starts_with(
                "check the URL's password; if the user does not exist yet, run \
                              `roachbank init` to create it with that password"
            ),
            "{hint}"
        );
        let missing = "cannot connect to postgresql://maxroach@localhost:26257/bank: connection \
                       to server at \"localhost\" (::1), port 26257 failed: fe_sendauth: no \
                       password supplied";
        for hint in [
            after_failed_open(missing, &config),
            after_no_password(missing),
        ] {
            let hint = hint.expect("a hint");
            for place in ["postgresql://USER:PASSWORD@", "PGPASSWORD", "~/.pgpass"] {
                assert!(hint.contains(place), "{hint}");
            }
        }
    }

    #[test]
    fn no_hint_for_another_name_or_another_failure() {
        let config = server("postgresql://maxroach@localhost:26257/bank");
        for error in [
            "FATAL: database \"postgres\" does not exist",
            "FATAL: role \"root\" does not exist",
            "FATAL: password authentication failed for user \"root\"",
            "relation \"bank\" does not exist",
            "FATAL: database \"bank\" is being accessed by other users",
        ] {
            assert_eq!(after_failed_open(error, &config), None, "{error}");
        }
    }

    #[test]
    fn undefined_reads_the_name_of_its_own_kind_only() {
        assert_eq!(
            undefined("x: database \"a b\" does not exist", "database"),
            Some("a b")
        );
        assert_eq!(
            undefined("role/user \"u\" does not exist", "role/user"),
            Some("u")
        );
        assert_eq!(undefined("role/user \"u\" does not exist", "user"), None);
        assert_eq!(undefined("myrole \"u\" does not exist", "role"), None);
        assert_eq!(undefined("role \"u\" exists", "role"), None);
    }
}
