//! Reading what `--echo` and `-v` print on stderr: records `YYYY-MM-DD HH:MM:SS,mmm LEVEL target
//! message`, SQLAlchemy's echo format, where a statement's SQL may run over several lines and its
//! binds follow on the next record (`[generated in 0.00002s] (1, 'x')`).

use chrono::{Local, NaiveDateTime};
use std::time::Duration;

/// The target of `--echo`'s records.
pub const ENGINE: &str = "roachbank::engine";
/// The target of `run_transaction`'s records (`-v`).
pub const RETRY: &str = diesel_retry::RETRY_TARGET;

/// One record: its prefix's parts and its message (continuation lines joined with `\n`).
#[derive(Debug, Clone)]
pub struct Record {
    /// When it was written, local time.
    pub time: NaiveDateTime,
    /// `INFO`, `WARN`, …
    pub level: String,
    /// The `tracing` target.
    pub target: String,
    /// The message and any `field=value` after it.
    pub message: String,
}

/// One echoed statement and the record of its binds after it.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The SQL, as sent.
    pub sql: String,
    /// What the brackets say: `raw sql`, `generated in …s`, `cached since …s ago`.
    pub cache: String,
    /// The binds as a Python tuple: `()`, `(1,)`, `(1, 'x')`.
    pub parameters: String,
}

/// The records in `stderr`. A line that does not start a record continues the one before it
/// (a statement's SQL runs over lines), unless it is one of roachbank's own `roachbank: …` lines,
/// which are not records.
pub fn records(stderr: &str) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::new();
    let mut in_record = false;
    for line in stderr.lines() {
        if let Some(record) = parse_record(line) {
            records.push(record);
            in_record = true;
        } else if line.starts_with("roachbank: ") {
            in_record = false;
        } else if in_record {
            let last = records.last_mut().expect("a record to continue");
            last.message.push('\n');
            last.message.push_str(line);
        }
    }
    records
}

/// `line` as the start of a record, if it is one.
fn parse_record(line: &str) -> Option<Record> {
    // "2026-12-04 19:50:01,123" is 23 characters.
    let stamp = line.get(..23)?;
    let time = NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S,%3f").ok()?;
    let mut rest = line[23..].strip_prefix(' ')?.splitn(3, ' ');
    let level = rest.next()?.to_string();
    if !["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level.as_str()) {
        return None;
    }
    let target = rest.next()?.to_string();
    let message = rest.next().unwrap_or("").to_string();
    Some(Record {
        time,
        level,
        target,
        message,
    })
}

/// The statements `--echo` printed, each with the binds record that must follow it at once
/// (panics, quoting `stderr`, if one does not).
pub fn statements(stderr: &str) -> Vec<Statement> {
    let engine: Vec<Record> = records(stderr)
        .into_iter()
        .filter(|record| record.target == ENGINE)
        .collect();
    let mut statements = Vec::new();
    let mut records = engine.iter().peekable();
    while let Some(record) = records.next() {
        let message = &record.message;
        if message.starts_with("connecting to ") || message.starts_with("SQL error: ") {
            continue;
        }
        assert!(
            !message.starts_with('['),
            "binds without a statement before them: {message:?}\n--- stderr ---\n{stderr}"
        );
        let binds = records.next().unwrap_or_else(|| {
            panic!("no binds after the statement {message:?}\n--- stderr ---\n{stderr}")
        });
        let (cache, parameters) = binds
            .message
            .strip_prefix('[')
            .and_then(|rest| rest.split_once("] "))
            .filter(|(_, parameters)| parameters.starts_with('(') && parameters.ends_with(')'))
            .unwrap_or_else(|| {
                panic!(
                    "the record after the statement {message:?} is not its binds: {:?}\n\
                     --- stderr ---\n{stderr}",
                    binds.message
                )
            });
        assert_eq!(
            binds.level, record.level,
            "binds at another level than their statement"
        );
        statements.push(Statement {
            sql: message.clone(),
            cache: cache.to_string(),
            parameters: parameters.to_string(),
        });
    }
    statements
}

/// Panics unless `time` is within `slack` of now (local time, as the records are written).
pub fn assert_recent(time: NaiveDateTime, slack: Duration) {
    let now = Local::now().naive_local();
    let slack = chrono::Duration::from_std(slack).expect("a small duration");
    assert!(
        time > now - slack && time <= now + chrono::Duration::seconds(1),
        "timestamp {time} is not within {slack} of now ({now})"
    );
}
