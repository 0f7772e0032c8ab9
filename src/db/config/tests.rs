//! Unit tests of [`super`].

use super::*;

fn server(url: &str) -> DatabaseConfig {
    DatabaseConfig::parse(url, UrlSource::Flag).unwrap_or_else(|err| panic!("{url}: {err}"))
}

#[test]
fn the_connect_bound_is_the_urls_connect_timeout_for_each_host() {
    let bound = |url: &str| server(url).connect_bound();
    assert_eq!(bound("postgresql://h/db"), Duration::from_secs(10));
    assert_eq!(
        bound("postgresql://h/db?connect_timeout=3"),
        Duration::from_secs(3)
    );
    assert_eq!(
        bound("postgresql://h1:1,h2:2,h3:3/db?connect_timeout=2"),
        Duration::from_secs(6)
    );
    // No limit asked for: the waits built on the bound must still end.
    assert_eq!(
        bound("postgresql://h/db?connect_timeout=0"),
        Duration::from_secs(10)
    );
    assert_eq!(bound("bank.db"), Duration::from_secs(10));
}

#[test]
fn roachbank_settings_are_added_unless_the_url_makes_them() {
    let config = server("cockroachdb://maxroach@localhost:26257/bank?sslmode=disable");
    assert_eq!(config.backend(), Backend::Postgresql);
    let url = config.url().unwrap();
    assert_eq!(url.get("connect_timeout"), Some("10"));
    assert_eq!(url.get("fallback_application_name"), Some("roachbank"));
    assert_eq!(config.connect_timeout(), Some(Duration::from_secs(10)));
    assert_eq!(
        config.redacted(),
        "cockroachdb://maxroach@localhost:26257/bank"
    );
    assert!(config.connection_string().contains("connect_timeout='10'"));
    for (given, timeout, fallback) in [
        (
            "postgres://h/db?connect%5Ftimeout=3&application_name=mine",
            "3",
            None,
        ),
        (
            "postgres://h/db?fallback_application_name=x",
            "10",
            Some("x"),
        ),
        ("postgres://h/db?connect_timeout=0", "0", Some("roachbank")),
    ] {
        let url = server(given).url().unwrap().clone();
        assert_eq!(url.get("connect_timeout"), Some(timeout), "{given}");
        assert_eq!(url.get("fallback_application_name"), fallback, "{given}");
    }
    assert_eq!(
        server("postgres://h?connect_timeout=-1").connect_timeout(),
        None
    );
}

#[test]
fn user_database_and_password_come_from_libpq() {
    let config = server("postgresql://u:pw%2Fx@h1:5432,h2:5433/bank?sslmode=verify-full");
    assert_eq!(config.redacted(), "postgresql://u@h1:5432,h2:5433/bank");
    assert_eq!(config.user().as_deref(), Some("u"));
    assert_eq!(config.password().as_deref(), Some("pw/x"));
    assert_eq!(config.database_name().as_deref(), Some("bank"));
    let other = config.with_database("new bank");
    assert_eq!(
        other.redacted(),
        "postgresql://u@h1:5432,h2:5433/new%20bank"
    );
    assert_eq!(other.password().as_deref(), Some("pw/x"));
    assert_eq!(other.url().unwrap().get("sslmode"), Some("verify-full"));
    let sqlite = server("bank.db");
    assert_eq!((sqlite.user(), sqlite.database_name()), (None, None));
    assert_eq!(sqlite.with_database("x"), sqlite);
}

#[test]
fn in_memory_sqlite_is_refused_with_what_to_use_instead() {
    for url in [
        "sqlite://:memory:",
        "sqlite://file::memory:",
        "sqlite://file:bank?mode=memory&cache=shared",
    ] {
        let err = DatabaseConfig::parse(url, UrlSource::Flag).unwrap_err();
        assert!(
            matches!(err, ConfigError::InMemorySqlite { .. }),
            "{url}: {err}"
        );
        assert!(err.to_string().contains("use a file"), "{err}");
    }
}

#[test]
fn sqlite_urls_and_db_paths_name_files() {
    let url = server("sqlite://data/x.sqlite");
    assert_eq!(url.sqlite_path(), Some(PathBuf::from("data/x.sqlite")));
    assert_eq!(url.redacted(), "data/x.sqlite");
    let abs = server("SQLITE:///tmp/a.db");
    assert_eq!(abs.sqlite_path(), Some(PathBuf::from("/tmp/a.db")));
    assert_eq!(server("my.db").backend(), Backend::Sqlite);
}

#[test]
fn refusals_never_show_a_password() {
    for (url, shown) in [
        (
            "mysql://u:hunter2@h/db",
            "unsupported database URL mysql://…",
        ),
        (
            "host=h password=hunter2",
            "unsupported database URL (not scheme://…)",
        ),
        (
            "postgresql://u:hunter2%zz@h/db",
            "cannot use the database URL postgresql://u@…",
        ),
    ] {
        let message = DatabaseConfig::parse(url, UrlSource::Flag)
            .unwrap_err()
            .to_string();
        assert!(message.starts_with(shown), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
    let empty = DatabaseConfig::parse("  ", UrlSource::Flag);
    assert_eq!(empty, Err(ConfigError::Empty));
    let no_path = DatabaseConfig::parse("sqlite://", UrlSource::Flag);
    assert_eq!(no_path, Err(ConfigError::MissingSqlitePath));
}
