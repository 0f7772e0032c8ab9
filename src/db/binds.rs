//! A statement's bind parameters shown as SQLAlchemy's `echo=True` shows them: a Python tuple
//! — `(1, 'x')`, `(1,)`, `()` — strings in Python's quotes, and long ones cut the way
//! SQLAlchemy's `sql.util._repr_params` cuts them: more than 100 parameters show the first and
//! the last 50 around ` ... N parameters truncated ... `; a value longer than 300 characters
//! shows its first and last 150 around ` ... (N characters truncated) ... `.
//!
//! Diesel hands the binds over as the `Debug` form of a list (`[1, "x"]`); each top-level
//! element is kept in its `Debug` form, except that a string literal is requoted as Python
//! would quote it and a nullable value `Some(v)` is shown as `v` (`None` stays `None`).

/// Parameters shown whole up to this many (SQLAlchemy's `max_params`).
const MAX_PARAMS: usize = 100;
/// Characters of one value shown whole up to this many (SQLAlchemy's `max_chars`).
const MAX_CHARS: usize = 300;

/// The Python tuple for diesel's `Debug` list of binds (`[1, "x"]` → `(1, 'x')`). Text that is
/// not such a list comes back as it is.
pub fn python_tuple(debug_list: &str) -> String {
    let Some(inner) = debug_list
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    else {
        return debug_list.to_string();
    };
    let values: Vec<String> = split_top_level(inner)
        .into_iter()
        .map(|value| truncate_chars(&python_value(value)))
        .collect();
    match values.len() {
        0 => "()".to_string(),
        1 => format!("({},)", values[0]),
        n if n > MAX_PARAMS => format!(
            "({} ... {} parameters truncated ... {})",
            values[..MAX_PARAMS / 2].join(", "),
            n - MAX_PARAMS,
            values[n - MAX_PARAMS / 2..].join(", ")
        ),
        _ => format!("({})", values.join(", ")),
    }
}

/// The top-level elements of a `Debug` list's inside, split at the commas outside brackets,
/// string literals and character literals.
fn split_top_level(inner: &str) -> Vec<&str> {
    let mut elements = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    let mut chars = inner.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' | '\'' => {
                // Skip to the closing quote, past escaped characters.
                while let Some((_, inside)) = chars.next() {
                    match inside {
                        '\\' => {
                            chars.next();
                        }
                        _ if inside == c => break,
                        _ => {}
                    }
                }
            }
            '[' | '(' | '{' => depth += 1,
            ']' | ')' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                elements.push(inner[start..at].trim());
                start = at + 1;
            }
            _ => {}
        }
    }
    let last = inner[start..].trim();
    if !last.is_empty() || !elements.is_empty() {
        elements.push(last);
    }
    elements
}

/// One value: a Rust string literal requoted as Python's `repr` quotes it, `Some(v)` shown as
/// `v`; anything else as it is.
fn python_value(value: &str) -> String {
    if let Some(inner) = value
        .strip_prefix("Some(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        // A nullable column's value: Python shows the value itself (and `None` as it is).
        return python_value(inner);
    }
    match rust_string_literal(value) {
        Some(text) => python_repr(&text),
        None => value.to_string(),
    }
}

/// The text of `literal` if it is exactly one Rust `Debug` string literal (`"a\"b"`).
fn rust_string_literal(literal: &str) -> Option<String> {
    let inner = literal.strip_prefix('"')?.strip_suffix('"')?;
    let mut text = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return None, // an unescaped quote: more than one literal
            '\\' => match chars.next()? {
                'n' => text.push('\n'),
                'r' => text.push('\r'),
                't' => text.push('\t'),
                '0' => text.push('\0'),
                'u' => {
                    let hex: String = chars
                        .by_ref()
                        .skip_while(|c| *c == '{')
                        .take_while(|c| *c != '}')
                        .collect();
                    text.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => text.push(other), // \\ \" \'
            },
            c => text.push(c),
        }
    }
    Some(text)
}

/// `text` as Python's `repr` shows a `str`: single quotes unless it holds a single quote and
/// no double one.
fn python_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut repr = String::with_capacity(text.len() + 2);
    repr.push(quote);
    for c in text.chars() {
        match c {
            '\\' => repr.push_str("\\\\"),
            '\n' => repr.push_str("\\n"),
            '\r' => repr.push_str("\\r"),
            '\t' => repr.push_str("\\t"),
            c if c == quote => {
                repr.push('\\');
                repr.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                repr.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => repr.push(c),
        }
    }
    repr.push(quote);
    repr
}

/// `value` cut to its first and last 150 characters if it is longer than 300.
fn truncate_chars(value: &str) -> String {
    let count = value.chars().count();
    if count <= MAX_CHARS {
        return value.to_string();
    }
    let head: String = value.chars().take(MAX_CHARS / 2).collect();
    let tail: String = value.chars().skip(count - MAX_CHARS / 2).collect();
    format!(
        "{head} ... ({} characters truncated) ... {tail}",
        count - MAX_CHARS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_read_as_a_python_tuple() {
        assert_eq!(python_tuple("[]"), "()");
        assert_eq!(python_tuple("[1]"), "(1,)");
        assert_eq!(
            python_tuple("[857242954, -10502618, 5398818042948065223]"),
            "(857242954, -10502618, 5398818042948065223)"
        );
        assert_eq!(python_tuple(r#"[1, "x"]"#), "(1, 'x')");
        assert_eq!(python_tuple(r#"["it's"]"#), r#"("it's",)"#);
        assert_eq!(
            python_tuple(r#"["say \"hi\", it's", "a\\b\n"]"#),
            r#"('say "hi", it\'s', 'a\\b\n')"#
        );
        assert_eq!(
            python_tuple(r#"[Some(5), None, [1, 2], "a, b", 'c', ',', Some("x")]"#),
            "(5, None, [1, 2], 'a, b', 'c', ',', 'x')"
        );
        assert_eq!(python_tuple(r#"["caf\u{e9}"]"#), "('café',)");
        assert_eq!(python_tuple("not a list"), "not a list");
    }

    #[test]
    fn long_binds_are_cut_like_sqlalchemy() {
        let many: Vec<String> = (0..250).map(|i| i.to_string()).collect();
        let shown = python_tuple(&format!("[{}]", many.join(", ")));
        let head: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        let tail: Vec<String> = (200..250).map(|i| i.to_string()).collect();
        assert_eq!(
            shown,
            format!(
                "({} ... 150 parameters truncated ... {})",
                head.join(", "),
                tail.join(", ")
            )
        );

        let long = "x".repeat(400);
        let shown = python_tuple(&format!("[{long:?}]"));
        // The Python repr is 402 characters (the quotes count): 102 are cut.
        assert_eq!(
            shown,
            format!(
                "('{} ... (102 characters truncated) ... {}',)",
                "x".repeat(149),
                "x".repeat(149)
            )
        );
    }
}
