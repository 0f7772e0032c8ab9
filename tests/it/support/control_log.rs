//! [`ControlLog`]: the transaction-control statements a connection sends, recorded by Diesel's
//! instrumentation — on a sync `PgConnection` of an r2d2 pool (as its customizer) or on a
//! diesel-async connection (`set_instrumentation`).

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::r2d2::CustomizeConnection;
use diesel::{Connection, PgConnection};
use std::sync::{Arc, Mutex};

/// The transaction-control statements a pool's connections send, in order.
#[derive(Clone, Default, Debug)]
pub struct ControlLog(Arc<Mutex<Vec<String>>>);

impl ControlLog {
    /// The statements recorded so far.
    pub fn statements(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Forgets the statements recorded so far.
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

impl Instrumentation for ControlLog {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        const CONTROL: &[&str] = &["BEGIN", "SAVEPOINT", "ROLLBACK", "RELEASE", "COMMIT"];
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            let sql = query.to_string();
            if CONTROL.iter().any(|word| sql.starts_with(word)) {
                self.0.lock().unwrap().push(sql);
            }
        }
    }
}

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for ControlLog {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        conn.set_instrumentation(self.clone());
        Ok(())
    }
}
