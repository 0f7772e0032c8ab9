//! What every command prints its results with: [`say!`] (a line on stdout that reports a
//! failed write instead of panicking), and the words and numbers of those lines.

use super::error::StdoutError;
use roachbank::workload::stats::grouped;
use std::io::Write;
use std::time::Duration;

/// Writes one line of a command's results on stdout (line-buffered, so it is written at once).
pub fn write_line(line: std::fmt::Arguments<'_>) -> Result<(), StdoutError> {
    writeln!(std::io::stdout().lock(), "{line}").map_err(StdoutError)
}

/// `println!` that returns a [`StdoutError`] instead of panicking: `say!("…", …)?`.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// "", or "s" after any count but 1.
pub fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// "1 retry", "2 retries", "1,024 retries".
pub fn retries(n: u64) -> String {
    format!("{} retr{}", grouped(n), if n == 1 { "y" } else { "ies" })
}

/// A count the database returned (never negative), its digits grouped; money and ids stay
/// plain.
pub fn count(n: i64) -> String {
    grouped(n.max(0) as u64)
}

/// A latency in milliseconds with two decimals, or "-" when there is none.
pub fn format_latency(latency: Option<Duration>) -> String {
    latency.map_or_else(
        || "-".to_string(),
        |latency| format!("{:.2} ms", latency.as_secs_f64() * 1000.0),
    )
}
