//! Names and strings written into SQL: quoted identifiers and string literals, as PostgreSQL
//! and CockroachDB read them (`init`'s statements name users and databases, and carry
//! passwords, that cannot be bind parameters).

/// `name` as a quoted SQL identifier: `"…"` with `"` doubled (PostgreSQL and CockroachDB).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a SQL string literal: `'…'` with `'` doubled; written `E'…'` with `\` doubled when
/// it holds a backslash, so it means the same whatever `standard_conforming_strings` says (as
/// libpq's `PQescapeLiteral` does).
pub fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("max\"roach"), "\"max\"\"roach\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'c"), "E'a\\\\b''c'");
    }
}
