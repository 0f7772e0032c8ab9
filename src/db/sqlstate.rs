//! A database error known only by its words and SQLSTATE: one that reached roachbank as text.

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind, Error as DieselError, SqlState};

/// A database error known only by its words and, where known, its SQLSTATE: one that reached
/// roachbank as text (a failed migration, see `migrate::failure`), or a test's.
pub(crate) fn error_from_text(message: String, sqlstate: Option<SqlState>) -> DieselError {
    DieselError::DatabaseError(
        DatabaseErrorKind::Unknown,
        Box::new(TextError { message, sqlstate }),
    )
}

/// See [`error_from_text`].
struct TextError {
    message: String,
    sqlstate: Option<SqlState>,
}

impl DatabaseErrorInformation for TextError {
    fn message(&self) -> &str {
        &self.message
    }
    fn details(&self) -> Option<&str> {
        None
    }
    fn hint(&self) -> Option<&str> {
        None
    }
    fn table_name(&self) -> Option<&str> {
        None
    }
    fn column_name(&self) -> Option<&str> {
        None
    }
    fn constraint_name(&self) -> Option<&str> {
        None
    }
    fn statement_position(&self) -> Option<i32> {
        None
    }
    fn sqlstate(&self) -> Option<SqlState> {
        self.sqlstate
    }
}
