//! Rows of 64-bit integers in PostgreSQL's binary `COPY` format
//! (<https://www.postgresql.org/docs/current/sql-copy.html>, "Binary Format"), written in
//! CopyData messages of about [`MESSAGE_BYTES`] each.
//!
//! diesel's `copy_from(…).from_insertable(rows)` sends one CopyData message per row; the server
//! then reads a message (and its header) for every row. Here a message carries ~1,400 rows of
//! four columns, and the rows are encoded straight from the caller's values. Use it as the
//! callback of diesel's `copy_from(table).from_raw_data(columns, …)` with
//! `.with_format(CopyFormat::Binary)`.

use diesel::result::Error as DieselError;
use std::io::Write;

/// About how many bytes each CopyData message carries: large enough that the per-message work
/// of client and server vanishes, small enough that the server starts on the first rows while
/// the next are being encoded.
pub const MESSAGE_BYTES: usize = 64 * 1024;

/// The binary format's signature, flags field (no OIDs) and header extension length (none).
const HEADER: [u8; 19] = *b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The trailer: a field count of -1.
const TRAILER: [u8; 2] = (-1i16).to_be_bytes();

/// Writes `rows` — `COLUMNS` BIGINT values each, `None` for NULL — to `out` as a whole binary
/// `COPY` stream: header, rows, trailer.
pub fn write_int8_rows<const COLUMNS: usize>(
    out: &mut dyn Write,
    rows: impl IntoIterator<Item = [Option<i64>; COLUMNS]>,
) -> Result<(), DieselError> {
    let field_count = i16::try_from(COLUMNS)
        .map_err(|_| DieselError::QueryBuilderError("too many COPY columns".into()))?;
    let mut message = Vec::with_capacity(MESSAGE_BYTES + 2 + 12 * COLUMNS);
    message.extend_from_slice(&HEADER);
    for row in rows {
        message.extend_from_slice(&field_count.to_be_bytes());
        for value in row {
            match value {
                Some(value) => {
                    message.extend_from_slice(&8i32.to_be_bytes());
                    message.extend_from_slice(&value.to_be_bytes());
                }
                None => message.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        if message.len() >= MESSAGE_BYTES {
            send(out, &message)?;
            message.clear();
        }
    }
    message.extend_from_slice(&TRAILER);
    send(out, &message)
}

/// One CopyData message.
fn send(out: &mut dyn Write, message: &[u8]) -> Result<(), DieselError> {
    out.write_all(message)
        .map_err(|error| DieselError::SerializationError(Box::new(error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects the messages written, one `Vec` per `write` call.
    #[derive(Default)]
    struct Messages(Vec<Vec<u8>>);

    impl Write for Messages {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn encodes_header_rows_nulls_and_trailer_as_postgresql_documents() {
        let mut out = Messages::default();
        write_int8_rows(&mut out, [[Some(1), None], [Some(-2), Some(0x0102)]]).unwrap();
        let bytes: Vec<u8> = out.0.concat();
        let mut expected = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 2, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0, 2, 0, 0, 0, 8]);
        expected.extend_from_slice(&(-2i64).to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 1, 2]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(bytes, expected);
        assert_eq!(out.0.len(), 1, "a few rows are one message");
    }

    #[test]
    fn splits_a_long_stream_into_messages_of_about_message_bytes() {
        let rows = 100_000;
        let mut out = Messages::default();
        write_int8_rows(&mut out, (0..rows).map(|i| [Some(i), Some(i)])).unwrap();
        let total: usize = out.0.iter().map(Vec::len).sum();
        assert_eq!(total, 19 + rows as usize * (2 + 2 * 12) + 2);
        assert!(out.0.len() >= total / (MESSAGE_BYTES + 64));
        assert!(out.0[..out.0.len() - 1]
            .iter()
            .all(|message| (MESSAGE_BYTES..MESSAGE_BYTES + 64).contains(&message.len())));
    }
}
