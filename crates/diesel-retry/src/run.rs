//! The sync driver: carries out the [`Machine`]'s actions on connections from a
//! [`ConnectionSource`], sleeping the thread for its waits.

use crate::connection::RetryConnection;
use crate::error::{Committed, DatabaseErrorSource, TransactionError};
use crate::policy::RetryPolicy;
use crate::protocol::{one_line, Action, Event, Machine, Shape};
use crate::source::ConnectionSource;

/// A "did it commit?" check: the committed value if the work's effect is there.
pub(crate) type Probe<'p, C, T, E> = Option<&'p mut dyn FnMut(&mut C) -> Result<Option<T>, E>>;

/// Runs `work` until it commits or the protocol says stop (see the [crate documentation](crate)).
pub(crate) fn run<S, T, E, F>(
    mut source: S,
    policy: &RetryPolicy,
    mut work: F,
    mut probe: Probe<'_, S::Connection, T, E>,
    shape: Shape,
) -> Result<Committed<T>, TransactionError<E>>
where
    S: ConnectionSource,
    F: FnMut(&mut S::Connection) -> Result<T, E>,
    E: DatabaseErrorSource,
{
    let (flavor, vouched) = (source.flavor(), source.sessions_are_serializable());
    let mut machine = Machine::new(policy, shape, flavor, vouched, probe.is_some());
    let _in_span = machine.span().clone().entered();
    let mut pool_error = None;
    let mut action = machine.next();
    loop {
        action = match action {
            Action::Connect { wait } => {
                let checkout = match wait {
                    Some(wait) => source.checkout_within(wait),
                    None => source.checkout(),
                };
                match checkout {
                    Ok(mut conn) => {
                        machine.answer(Event::Connected(conn.default_flavor()));
                        on_connection(&mut machine, &mut *conn, &mut work, &mut probe)
                    }
                    Err(error) => {
                        machine.answer(Event::NoConnection(one_line(&error)));
                        pool_error = Some(error);
                        machine.next()
                    }
                }
            }
            Action::Finish(result) => {
                return result.map_err(|error| {
                    error.with_source_error(|| pool_error.expect("no connection: its error"))
                })
            }
            Action::Sleep(wait) => {
                std::thread::sleep(wait);
                machine.answer(Event::Done);
                machine.next()
            }
            _ => {
                machine.answer(Event::Done); // a `Release` with no connection held
                machine.next()
            }
        };
    }
}

/// Carries out the machine's actions on `conn` until it asks for another connection, lets
/// this one go, or finishes; returns that action.
fn on_connection<C, T, E, F>(
    machine: &mut Machine<'_, T, E>,
    conn: &mut C,
    work: &mut F,
    probe: &mut Probe<'_, C, T, E>,
) -> Action<T, E>
where
    C: RetryConnection,
    F: FnMut(&mut C) -> Result<T, E>,
    E: DatabaseErrorSource,
{
    loop {
        let event = match machine.next() {
            Action::AskIsolation => Event::Isolation(conn.default_isolation().map_err(E::from)),
            Action::Begin(flavor, access) => {
                Event::Begun(conn.begin(flavor, access).map_err(E::from))
            }
            Action::Work => Event::Worked(work(conn)),
            Action::Commit(flavor) => Event::Committed(
                conn.commit(flavor)
                    .map_err(|error| (E::from(error), conn.in_transaction())),
            ),
            Action::RollbackToRestart => {
                Event::RestartedInPlace(conn.rollback_to_restart().is_ok())
            }
            Action::Rollback => {
                conn.rollback();
                Event::Done
            }
            Action::Discard => {
                conn.discard();
                Event::Done
            }
            Action::Sleep(wait) => {
                std::thread::sleep(wait);
                Event::Done
            }
            Action::Probe => {
                Event::Probed(probe.as_deref_mut().expect("settling has a probe")(conn))
            }
            action @ (Action::Release | Action::Connect { .. } | Action::Finish(_)) => {
                return action
            }
        };
        machine.answer(event);
    }
}
