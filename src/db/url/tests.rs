//! Unit tests of [`super`].

use super::*;

fn url(text: &str) -> ConnectionUrl {
    ConnectionUrl::parse(text).unwrap_or_else(|err| panic!("{text}: {err}"))
}

#[test]
fn libpq_reads_the_url_and_what_is_shown_is_built_from_that() {
    let tricky = url("POSTGRES://max%40roach:p#a?s:s@h1:26257,[::1]:26258/my%20db?sslmode=disable");
    let read = ["user", "password", "dbname", "sslmode"].map(|key| tricky.get(key));
    assert_eq!(
        read,
        [
            Some("max@roach"),
            Some("p#a?s:s"),
            Some("my db"),
            Some("disable")
        ]
    );
    let shown = "postgres://max%40roach@h1:26257,[::1]:26258/my%20db";
    assert_eq!(tricky.redacted(), shown);
    assert_eq!(format!("{tricky:?}"), format!("ConnectionUrl({shown:?})"));
    let query = url("cockroachdb://h/?user=u&dbn%61me=bank&pass%77ord=s%27q&port=1");
    assert_eq!(query.get("password"), Some("s'q"));
    assert_eq!(query.redacted(), "cockroachdb://u@h:1/bank");
    for (text, shown) in [
        ("postgresql://", "postgresql://"),
        ("postgresql://u:@h/?user=", "postgresql://h"),
        (
            "host=/tmp,h2 port=5 dbname=d",
            "postgresql://%2Ftmp:5,h2:5/d",
        ),
        (
            "postgresql://h1:1,h2:2,h3/d?hostaddr=1.2.3.4",
            "postgresql://h1:1,h2:2,h3/d",
        ),
        (
            "postgresql://?hostaddr=1.2.3.4&port=7",
            "postgresql://1.2.3.4:7",
        ),
        ("postgresql://h1,h2/d?port=1,2,3", "postgresql://h1,h2/d"),
    ] {
        assert_eq!(url(text).redacted(), shown, "{text}");
    }
}

#[test]
fn the_conninfo_string_and_the_url_read_back_the_same() {
    for text in [
        "postgresql://u:p'w\\x@h1:26257,[::1]:26258,h3:26259/bank?options=-c%20a%3Db",
        "postgresql://u@h1,h2:5/b",
        "host=a,b port=1,2,3 password=x",
        "postgresql://",
    ] {
        let read = url(text);
        assert_eq!(url(&read.to_conninfo()).options, read.options, "{text}");
        assert_eq!(url(&read.to_url()).options, read.options, "{text}");
    }
    let edited = url("postgresql://u@h/a?dbname=b").with("dbname", "new bank");
    assert_eq!(edited.to_url(), "postgresql://u@h/new%20bank");
}

#[test]
fn hosts_rotate_with_their_ports() {
    let read = url("postgresql://u:pw@h1:26257,h2:26258,h3:26259/bank");
    assert_eq!(read.host_count(), 3);
    let rotated = read.with_hosts_rotated(1);
    let lists = (rotated.get("host"), rotated.get("port"));
    assert_eq!(lists, (Some("h2,h3,h1"), Some("26258,26259,26257")));
    let one_port = url("host=a,b port=26257").with_hosts_rotated(1);
    let lists = (one_port.get("host"), one_port.get("port"));
    assert_eq!(lists, (Some("b,a"), Some("26257")));
    assert_eq!(url("postgresql:///db").host_count(), 1);
}

#[test]
fn a_url_libpq_refuses_or_misreads_is_refused_without_its_password() {
    // (URL, how the error starts)
    for (text, shown) in [
        ("postgresql://maxroach:p@ss@h/db", "postgresql://maxroach@…: an '@'"),
        ("postgresql://u:Ab1/Cd2@h/db", "postgresql://…: an '@'"),
        ("postgresql://u:Pa1@Qb2:Rc3/Sd4@h/db", "postgresql://u@…: an '@'"),
        ("postgresql://h/db@x", "postgresql://…: an '@'"),
        ("postgresql://h?password=Ab1@Cd2", "postgresql://…: '?password='"),
        ("postgresql://h:5?sslmode=disable&password=Ab1@Cd2", "postgresql://…: '?sslmode='"),
        ("postgresql://u:Ab1%zz@h/db", "postgresql://u@…: invalid percent-encoded token: \"***\""),
        ("postgresql://u:Ab1 Cd2@h/db", "postgresql://u@…: unexpected spaces found in \"***\""),
        ("postgresql://u:Ab1@[::1/db", "postgresql://u@…: end of string reached when looking for matching \"]\" in IPv6 host address in URI: \"***\""),
        ("postgresql://[::1]x/db", "postgresql://…: unexpected character \"x\" at position 19 in URI (expected \":\" or \"/\"): \"***\""),
        ("postgresql://h/db?password=Ab1%zz", "postgresql://…: invalid percent-encoded token: \"***\""),
        ("user=u password='Ab1", "the connection string: unterminated quoted string"),
        ("mysql://u:Ab1@h/db", "mysql://…: not a postgresql:// URL"),
    ] {
        let err = ConnectionUrl::parse(text).unwrap_err().to_string();
        assert!(err.starts_with(shown), "{text}: {err}");
        for piece in ["Ab1", "Cd2", "p@ss", "ss@"] {
            assert!(!err.contains(piece), "{text}: {err}");
        }
    }
    // A query key libpq quotes stays readable.
    let err = ConnectionUrl::parse("postgresql://u:pw@h/db?nonsense=1").unwrap_err();
    assert_eq!(err.reason, "invalid URI query parameter: \"nonsense\"");
    // A password holding `?`, `#`, `:` and `=` is libpq's, and fine.
    let password = url("postgresql://u:a?b=c#d:e@h/db?sslmode=disable");
    assert_eq!(password.get("password"), Some("a?b=c#d:e"));
}
