//! A loopback TCP proxy in front of the test server that can cut a connection at an exact
//! point of the conversation: once the client has sent a message containing a chosen statement
//! (say `COMMIT`), the proxy forwards it to the server and then drops both sides before the
//! server's answer can reach the client. The client sees its connection lost with the statement
//! in flight — the "commit outcome unknown" case no mock can produce honestly.
//!
//! [`CuttingProxy::cut_after`] forwards the triggering statement before cutting (the server
//! runs it: "the commit landed, its answer was lost"); [`CuttingProxy::cut_instead_of`] drops it
//! and cuts (the server never sees it: "the commit never reached the server"). The client sees
//! the same lost connection either way. [`CuttingProxy::swallow`] is a network partition: the
//! statement is dropped and the client's side closed, while the server's side stays open and
//! silent, its transaction idle and holding its locks, until the server ends the session.
//! [`CuttingProxy::commit_before`] cuts nothing: it sends `COMMIT; ` ahead of a simple-protocol
//! statement, so that the server ends the open transaction just before running it — what
//! CockroachDB's `autocommit_before_ddl` does at a transaction's first DDL statement.
//!
//! The proxy can also answer in the server's place, as CockroachDB does when it cancels a
//! statement (see "Answering in the server's place" at the end of this file):
//! [`CuttingProxy::answer_canceled_after_commit`] lets the statement commit and answers the client
//! SQLSTATE 57014 all the same; [`CuttingProxy::answer_canceled_instead_of`] answers 57014 to a
//! statement the server never sees; [`CuttingProxy::drain_at`] plays a draining node, which
//! cancels the statement (57014), closes the session (57P01) and refuses the next one.
//!
//! The trigger is a statement being *run*: a simple query holding the text, an unnamed Parse
//! holding it (libpq sends its Bind and Execute in the same write), or the Bind of a statement
//! prepared earlier on the connection from such a text. Preparing a named statement runs
//! nothing, so its Parse alone does not trigger — a statement Diesel keeps prepared is cut
//! when it is executed, as it is on every use after its first. Triggers armed one after
//! another fire in that order, each once.
//!
//! [`CuttingProxy::freeze`] is a frozen network (a proxy or load balancer that hangs, a
//! partition that drops every packet while both kernels keep their sockets): every established
//! connection stops forwarding both ways, its sockets kept open — not even an end of stream
//! goes through — and new connections are accepted and never answered.
//! [`CuttingProxy::freeze_after`] freezes everything once a chosen statement has been
//! forwarded: a commit that reached the server when the network froze.
//!
//! [`CuttingProxy::delay_answer_to`] cuts nothing: it holds the server's answer to a chosen
//! statement for a while, so that the statement is in flight, as the client sees it, for as
//! long as a test needs (to drop the future awaiting it, say).
//!
//! [`Unreachable`] is an address whose connection attempts are never answered at all.

use super::{server, TestDb};
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A running proxy; it accepts connections until the value is dropped (and the process ends).
pub struct CuttingProxy {
    port: u16,
    state: Arc<ProxyState>,
}

struct ProxyState {
    /// What triggers the next cuts, in order: only the first is watched for, and it is
    /// dropped when it fires (empty: forward everything).
    cut_on: Mutex<VecDeque<Trigger>>,
    /// How many connections were cut.
    cuts: AtomicUsize,
    /// Set by [`CuttingProxy::freeze`]: nothing is forwarded any more, nothing is closed.
    frozen: AtomicBool,
    /// Connections accepted while frozen, or beyond `answer_limit`, held open and never answered.
    held: Mutex<Vec<TcpStream>>,
    /// How many connections are answered (forwarded) at most; later ones are held.
    answer_limit: AtomicUsize,
    /// How many connections were accepted.
    accepted: AtomicUsize,
    closed: AtomicBool,
    /// How many statements or session starts the proxy answered in the server's place.
    answered: AtomicUsize,
}

/// An armed cut: the statement text to watch for, and what happens to it.
struct Trigger {
    needle: Vec<u8>,
    action: Action,
    /// Fire when a statement holding the needle is prepared (a named Parse), not run.
    on_prepare: bool,
}

/// What a trigger does to the read holding its statement.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Forward it, then cut both sides (`cut_after`).
    ForwardThenCut,
    /// Drop it and cut both sides (`cut_instead_of`).
    DropAndCut,
    /// Drop it, cut the client's side only, and keep the server's side open (`swallow`).
    Swallow,
    /// Forward it, send the server a `COMMIT` of the proxy's own, swallow the server's answers
    /// to both, and answer the client SQLSTATE 57014 with this message
    /// (`answer_canceled_after_commit`).
    CommitThenAnswerCanceled(&'static str),
    /// Drop it and answer the client SQLSTATE 57014 with this message, then ReadyForQuery with
    /// this transaction status; the connection goes on (`answer_canceled_instead_of`).
    AnswerCanceledInstead(&'static str, u8),
    /// Drop it, answer 57014 "query execution canceled" and 57P01 "server is shutting down",
    /// and close both sides, as a draining CockroachDB node does (`drain_at`).
    DrainCancel,
    /// Refuse the session being started with 57P01 "server is not accepting clients, try
    /// another node", as a draining CockroachDB node does (`drain_at`).
    RefuseSession,
    /// Forward it as `COMMIT; ` followed by the statement, cutting nothing (`commit_before`).
    CommitBefore,
    /// Forward it, then freeze the whole proxy (`freeze_after`).
    ForwardThenFreeze,
    /// Forward it, and hold the server's next answer on this connection this long
    /// (`delay_answer_to`).
    DelayAnswer(Duration),
}

impl CuttingProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy's port");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(ProxyState {
            cut_on: Mutex::new(VecDeque::new()),
            cuts: AtomicUsize::new(0),
            frozen: AtomicBool::new(false),
            held: Mutex::new(Vec::new()),
            answer_limit: AtomicUsize::new(usize::MAX),
            accepted: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            answered: AtomicUsize::new(0),
        });
        let upstream = upstream.to_string();
        let accept_state = Arc::clone(&state);
        thread::spawn(move || {
            for client in listener.incoming() {
                if accept_state.closed.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let earlier = accept_state.accepted.fetch_add(1, Ordering::SeqCst);
                if accept_state.frozen.load(Ordering::SeqCst)
                    || earlier >= accept_state.answer_limit.load(Ordering::SeqCst)
                {
                    // Accepted (the kernel did already), never answered, never closed.
                    accept_state.held.lock().unwrap().push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                spawn_pair(client, server, Arc::clone(&accept_state));
            }
        });
        CuttingProxy { port, state }
    }

    /// Starts a proxy in front of the suite's server ([`server()`]).
    pub fn in_front_of_server() -> CuttingProxy {
        CuttingProxy::start(&format!("{}:{}", server().host(), server().port()))
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on, cut the next connection whose client sends `statement` (once: the trigger
    /// is disarmed by the cut).
    pub fn cut_after(&self, statement: &str) {
        self.arm(statement, Action::ForwardThenCut);
    }

    /// From now on, cut the next connection whose client sends `statement` *without*
    /// forwarding it: the server never receives it and, for a `COMMIT`, rolls the open
    /// transaction back when the link goes (once: the trigger is disarmed by the cut). The
    /// whole read holding the statement is dropped; libpq sends a simple-protocol statement in
    /// one write and waits for its answer, so that read is the statement alone.
    pub fn cut_instead_of(&self, statement: &str) {
        self.arm(statement, Action::DropAndCut);
    }

    /// From now on, partition the next connection whose client sends `statement`: the
    /// statement is dropped and the client's side closed, but the server's side stays open and
    /// silent — for a `COMMIT`, the server keeps the transaction open, idle, holding its locks,
    /// until it ends the session itself (once: the trigger is disarmed by the cut).
    pub fn swallow(&self, statement: &str) {
        self.arm(statement, Action::Swallow);
    }

    /// From now on, cut the next connection whose client *prepares* a named statement holding
    /// `statement` (Diesel does on a statement's first use on a connection), without
    /// forwarding it: the connection is lost before anything ran.
    pub fn cut_instead_of_preparing(&self, statement: &str) {
        self.arm_with(statement, Action::DropAndCut, true);
    }

    /// From now on, forward the next simple-protocol query holding `statement` with `COMMIT; `
    /// in front of it (once): the server commits the open transaction, then runs the query in an
    /// implicit transaction of its own and reports the session idle — as CockroachDB 25.1+ does
    /// with `autocommit_before_ddl` on (cockroachdb/cockroach `pkg/sql/conn_executor_ddl.go`,
    /// `maybeAutoCommitBeforeDDL`). Nothing is cut.
    pub fn commit_before(&self, statement: &str) {
        self.arm(statement, Action::CommitBefore);
    }

    /// Freezes the network from now on: every established connection stops forwarding in both
    /// directions with its sockets kept open (whatever either side sends or closes, the other
    /// never hears of it), and every new connection is accepted and never answered. The
    /// sockets are released when the proxy is dropped.
    pub fn freeze(&self) {
        self.state.frozen.store(true, Ordering::SeqCst);
    }

    /// From now on, freeze the whole proxy ([`CuttingProxy::freeze`]) as soon as a client has
    /// sent `statement` and it has been forwarded: the server runs it (a commit lands), its
    /// answer never comes back, and nothing else gets through either (once: the trigger is
    /// disarmed when it fires; it counts as a cut).
    pub fn freeze_after(&self, statement: &str) {
        self.arm(statement, Action::ForwardThenFreeze);
    }

    /// From now on, hold the server's answer to the next `statement` for `delay` before
    /// passing it on (once; it counts as a cut, though nothing is cut): the statement runs at
    /// once, and the client waits for its answer all that time. A client that closes its side
    /// meanwhile is heard by the server at once, as without the proxy.
    pub fn delay_answer_to(&self, statement: &str, delay: Duration) {
        self.arm(statement, Action::DelayAnswer(delay));
    }

    /// Answers only the first `connections` connections ever accepted (those already made
    /// included): every later one is accepted and never answered, while the answered ones go
    /// on forwarding — a server that can no longer be reached by new connections.
    pub fn answer_only(&self, connections: usize) {
        self.state.answer_limit.store(connections, Ordering::SeqCst);
    }

    /// Whether the proxy is frozen.
    pub fn is_frozen(&self) -> bool {
        self.state.frozen.load(Ordering::SeqCst)
    }

    fn arm(&self, statement: &str, action: Action) {
        self.arm_with(statement, action, false);
    }

    fn arm_with(&self, statement: &str, action: Action, on_prepare: bool) {
        self.state.cut_on.lock().unwrap().push_back(Trigger {
            needle: statement.as_bytes().to_vec(),
            action,
            on_prepare,
        });
    }

    /// How many connections the proxy has cut so far.
    pub fn cuts(&self) -> usize {
        self.state.cuts.load(Ordering::SeqCst)
    }

    /// From now on, let the next `statement` commit, then answer it with SQLSTATE 57014 and
    /// `message` — what CockroachDB does to a statement canceled (or timed out) while its
    /// commit went through (`pkg/sql/conn_executor_exec.go` puts 57014 in place of whatever the
    /// statement met). The statement is forwarded, and the proxy sends the server a `COMMIT`
    /// of its own: after `RELEASE SAVEPOINT cockroach_restart`, which commits on CockroachDB
    /// but not on PostgreSQL, that is the commit; after a `COMMIT` or a statement sent alone it
    /// is a harmless "no transaction in progress". The server's answers to both are swallowed;
    /// the client gets the error and ReadyForQuery, outside any transaction (once).
    pub fn answer_canceled_after_commit(&self, statement: &str, message: &'static str) {
        self.arm(statement, Action::CommitThenAnswerCanceled(message));
    }

    /// From now on, answer the next `statement` with SQLSTATE 57014 and `message` instead of
    /// forwarding it (the server never sees it), then ReadyForQuery saying the client is in a
    /// failed transaction (`in_transaction`) or in none; the connection goes on (once).
    pub fn answer_canceled_instead_of(
        &self,
        statement: &str,
        message: &'static str,
        in_transaction: bool,
    ) {
        let status = if in_transaction { b'E' } else { b'I' };
        self.arm(statement, Action::AnswerCanceledInstead(message, status));
    }

    /// From now on, play a draining CockroachDB node (`pkg/sql/pgwire/server.go`, `drainImpl`;
    /// `conn.go`, `serveImpl`) at the next `statement`: instead of forwarding it, answer 57014
    /// "query execution canceled" (the session's context canceled once
    /// `server.shutdown.transactions.timeout` is up), then 57P01 "server is shutting down",
    /// and close both sides. The next session started through the proxy is refused with 57P01
    /// "server is not accepting clients, try another node" (each once).
    pub fn drain_at(&self, statement: &str) {
        self.arm(statement, Action::DrainCancel);
        // libpq's startup message: protocol 3.0, then its first parameter, `user`.
        let startup = b"\0\x03\0\0user\0";
        self.state.cut_on.lock().unwrap().push_back(Trigger {
            needle: startup.to_vec(),
            action: Action::RefuseSession,
            on_prepare: false,
        });
    }

    /// How many statements or session starts the proxy has answered in the server's place.
    pub fn answered(&self) -> usize {
        self.state.answered.load(Ordering::SeqCst)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `closed`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        // Frozen pairs see `closed` and release their sockets; so do the held connections.
        self.state.held.lock().unwrap().clear();
    }
}

/// Keeps a frozen pair's `sockets` open, silent, until the proxy is dropped; then shuts them
/// down (which also ends the pair's other thread, if it is blocked reading).
fn hold_while_frozen<const N: usize>(state: &ProxyState, sockets: [TcpStream; N]) {
    while !state.closed.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(50));
    }
    for socket in sockets {
        let _ = socket.shutdown(Shutdown::Both);
    }
}

fn spawn_pair(client: TcpStream, server: TcpStream, state: Arc<ProxyState>) {
    let (Ok(client_reader), Ok(server_writer)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (Ok(cut_client), Ok(cut_server)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    // Set before the triggering statement reaches the server, so that no answer read after it
    // is ever passed on.
    let cut = Arc::new(AtomicBool::new(false));
    let cut_seen_by_reader = Arc::clone(&cut);
    // The server's answers the proxy swallows, and what it answers instead.
    let replacing = Arc::new(Mutex::new(None));
    let replacing_seen_by_reader = Arc::clone(&replacing);
    // How long to hold the server's next answer (`delay_answer_to`).
    let delay_answer = Arc::new(Mutex::new(None::<Duration>));
    let delay_seen_by_reader = Arc::clone(&delay_answer);
    let reader_state = Arc::clone(&state);
    // client -> server, watching for the trigger
    thread::spawn(move || {
        let (mut from, mut to) = (client_reader, server_writer);
        let mut buffer = vec![0u8; 64 * 1024];
        let mut prepared = HashMap::new();
        loop {
            let read = from.read(&mut buffer);
            if state.frozen.load(Ordering::SeqCst) {
                // Whatever came (data, an end of stream), the server never hears of it.
                return hold_while_frozen(&state, [from, to, cut_client, cut_server]);
            }
            let n = match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buffer[..n];
            let (run, prepared_now) = statements_sent(chunk, &mut prepared);
            // The trigger this read fires, if any.
            let fired = {
                let mut trigger = state.cut_on.lock().unwrap();
                let hit = trigger.front().is_some_and(|armed| {
                    let texts = if armed.on_prepare {
                        &prepared_now
                    } else {
                        &run
                    };
                    texts.iter().any(|text| contains(text, &armed.needle))
                });
                if hit {
                    trigger.pop_front()
                } else {
                    None
                }
            };
            if let Some(Trigger {
                action: Action::CommitBefore,
                needle,
                ..
            }) = &fired
            {
                if to.write_all(&with_commit_before(chunk, needle)).is_err() {
                    break;
                }
                continue;
            }
            if let Some(Trigger {
                action: Action::DelayAnswer(delay),
                ..
            }) = &fired
            {
                // Set before the statement goes on, so that the reader holds its answer.
                *delay_answer.lock().unwrap() = Some(*delay);
                state.cuts.fetch_add(1, Ordering::SeqCst);
                if to.write_all(chunk).is_err() {
                    break;
                }
                continue;
            }
            // `Some(action)` when this read triggers the cut.
            let hit = fired.map(|armed| armed.action);
            if let Some(action) = hit.filter(|action| action.answers()) {
                state.answered.fetch_add(1, Ordering::SeqCst);
                let answer = ServerPlace {
                    client: &cut_client,
                    server: &cut_server,
                    replacing: &replacing,
                };
                match answer.answer(action, chunk) {
                    Ok(Flow::GoOn) => continue,
                    Ok(Flow::Closed) | Err(_) => break,
                }
            }
            if hit.is_some() {
                cut.store(true, Ordering::SeqCst);
            }
            if hit == Some(Action::Swallow) {
                // The client's side goes; the server's is left open and silent: nothing more is
                // written to it, not even an end of stream. The other thread keeps it open,
                // blocked reading it, until the server ends the session.
                state.cuts.fetch_add(1, Ordering::SeqCst);
                let _ = cut_client.shutdown(Shutdown::Both);
                return;
            }
            if hit == Some(Action::DropAndCut) {
                // The statement is dropped: cut at once, the server never sees it.
                state.cuts.fetch_add(1, Ordering::SeqCst);
                let _ = cut_client.shutdown(Shutdown::Both);
                let _ = cut_server.shutdown(Shutdown::Both);
                break;
            }
            if hit == Some(Action::ForwardThenFreeze) {
                // Frozen before the statement reaches the server, so that its answer is never
                // passed on.
                state.cuts.fetch_add(1, Ordering::SeqCst);
                state.frozen.store(true, Ordering::SeqCst);
                let _ = to.write_all(chunk);
                return hold_while_frozen(&state, [from, to, cut_client, cut_server]);
            }
            if hit.is_some() {
                // Counted before the statement goes on: the server's answer to it makes the
                // other thread close the client's side, and the client may then read `cuts`
                // before this thread runs again.
                state.cuts.fetch_add(1, Ordering::SeqCst);
            }
            if to.write_all(chunk).is_err() {
                break;
            }
            if hit.is_some() {
                // Let the statement reach the server before the link goes.
                thread::sleep(Duration::from_millis(50));
                let _ = cut_client.shutdown(Shutdown::Both);
                let _ = cut_server.shutdown(Shutdown::Both);
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    // server -> client, silenced once the cut is armed
    thread::spawn(move || {
        let (mut from, mut to) = (server, client);
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = from.read(&mut buffer);
            if reader_state.frozen.load(Ordering::SeqCst) {
                // The answer (or the server's end of stream) never reaches the client.
                return hold_while_frozen(&reader_state, [from, to]);
            }
            let n = match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if cut_seen_by_reader.load(Ordering::SeqCst) {
                break;
            }
            let delay = delay_seen_by_reader.lock().unwrap().take();
            if let Some(delay) = delay {
                thread::sleep(delay);
            }
            let passed = pass_to_client(&replacing_seen_by_reader, &buffer[..n]);
            if to.write_all(&passed).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// The URL of `db` reached through `proxy` (one started [`CuttingProxy::in_front_of_server`]).
pub fn via_proxy(db: &TestDb, proxy: &CuttingProxy) -> String {
    let server = server();
    db.url.replacen(
        &format!("{}:{}", server.host(), server.port()),
        &format!("127.0.0.1:{}", proxy.port()),
        1,
    )
}

/// `chunk` with `COMMIT; ` put in front of the text of each simple query holding `needle`.
fn with_commit_before(chunk: &[u8], needle: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + 8);
    let mut rest = chunk;
    while rest.len() >= 5 {
        let length = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let end = (1 + length).min(rest.len());
        let message = &rest[..end];
        if message[0] == b'Q' && contains(message, needle) {
            let mut text = b"COMMIT; ".to_vec();
            text.extend_from_slice(&message[5..]);
            out.push(b'Q');
            out.extend_from_slice(&(text.len() as u32 + 4).to_be_bytes());
            out.extend_from_slice(&text);
        } else {
            out.extend_from_slice(message);
        }
        rest = &rest[end..];
    }
    out.extend_from_slice(rest);
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// The texts of the statements `chunk` (one read of the client's messages) runs — simple
/// queries, unnamed Parses, and Binds of statements prepared earlier on this connection, whose
/// texts `prepared` keeps by name — and of those it prepares (named Parses). A read that is not
/// a run of whole messages (the startup message) counts as one text run.
fn statements_sent(
    chunk: &[u8],
    prepared: &mut HashMap<Vec<u8>, Vec<u8>>,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut run, mut prepared_now) = (Vec::new(), Vec::new());
    let mut rest = chunk;
    while !rest.is_empty() {
        let Some(length) = rest
            .get(1..5)
            .map(|bytes| u32::from_be_bytes(bytes.try_into().unwrap()) as usize)
            .filter(|length| rest[0].is_ascii_uppercase() && *length >= 4 && *length < rest.len())
        else {
            return (vec![chunk.to_vec()], Vec::new());
        };
        let mut fields = rest[5..1 + length].split(|byte| *byte == 0);
        match rest[0] {
            b'Q' => run.push(fields.next().unwrap_or_default().to_vec()),
            b'P' => {
                let name = fields.next().unwrap_or_default().to_vec();
                let text = fields.next().unwrap_or_default().to_vec();
                if name.is_empty() {
                    run.push(text);
                } else {
                    prepared_now.push(text.clone());
                    prepared.insert(name, text);
                }
            }
            b'B' => {
                let _portal = fields.next();
                let name = fields.next().unwrap_or_default();
                if let Some(text) = prepared.get(name).filter(|_| !name.is_empty()) {
                    run.push(text.clone());
                }
            }
            _ => {}
        }
        rest = &rest[1 + length..];
    }
    (run, prepared_now)
}

// Answering in the server's place.

impl Action {
    /// Whether the proxy answers the triggering read itself (rather than cutting).
    fn answers(self) -> bool {
        matches!(
            self,
            Action::CommitThenAnswerCanceled(_)
                | Action::AnswerCanceledInstead(..)
                | Action::DrainCancel
                | Action::RefuseSession
        )
    }
}

/// Whether a connection goes on after the proxy answered in the server's place.
enum Flow {
    GoOn,
    Closed,
}

/// Server messages being swallowed until `ready_left` more ReadyForQuery ('Z') have gone by,
/// and what the client gets in their place.
struct Replacing {
    ready_left: usize,
    /// The start of a server message whose end has not been read yet.
    partial: Vec<u8>,
    answer: Vec<u8>,
}

/// One pair's sockets, as the client->server thread answers in the server's place.
struct ServerPlace<'a> {
    client: &'a TcpStream,
    server: &'a TcpStream,
    replacing: &'a Mutex<Option<Replacing>>,
}

impl ServerPlace<'_> {
    /// Carries out `action` on `chunk`, the client's read that triggered it.
    fn answer(&self, action: Action, chunk: &[u8]) -> std::io::Result<Flow> {
        let (mut client, mut server) = (self.client, self.server);
        match action {
            Action::CommitThenAnswerCanceled(message) => {
                // Armed before anything reaches the server, so that none of its answers to the
                // statement or to the COMMIT is passed on.
                *self.replacing.lock().unwrap() = Some(Replacing {
                    ready_left: 2,
                    partial: Vec::new(),
                    answer: [error("ERROR", "57014", message), ready_for_query(b'I')].concat(),
                });
                server.write_all(chunk)?;
                server.write_all(&simple_query("COMMIT"))?;
                Ok(Flow::GoOn)
            }
            Action::AnswerCanceledInstead(message, status) => {
                client.write_all(
                    &[error("ERROR", "57014", message), ready_for_query(status)].concat(),
                )?;
                Ok(Flow::GoOn)
            }
            Action::DrainCancel => {
                let answer = [
                    error("ERROR", "57014", "query execution canceled"),
                    ready_for_query(b'E'),
                    error("FATAL", "57P01", "server is shutting down"),
                ]
                .concat();
                let written = client.write_all(&answer);
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                written.map(|()| Flow::Closed)
            }
            Action::RefuseSession => {
                let refusal = error(
                    "FATAL",
                    "57P01",
                    "server is not accepting clients, try another node",
                );
                let written = client.write_all(&refusal);
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                written.map(|()| Flow::Closed)
            }
            Action::ForwardThenCut
            | Action::DropAndCut
            | Action::Swallow
            | Action::CommitBefore
            | Action::ForwardThenFreeze
            | Action::DelayAnswer(_) => {
                unreachable!("the proxy cuts or forwards for these")
            }
        }
    }
}

/// What of `bytes`, read from the server, goes on to the client: all of it, unless the proxy
/// is swallowing the server's answers (see [`Replacing`]) — then nothing until the last
/// ReadyForQuery it waits for, and in its place the proxy's answer, followed by whatever came
/// after it.
fn pass_to_client(replacing: &Mutex<Option<Replacing>>, bytes: &[u8]) -> Vec<u8> {
    let mut replacing = replacing.lock().unwrap();
    let Some(swallowing) = replacing.as_mut() else {
        return bytes.to_vec();
    };
    swallowing.partial.extend_from_slice(bytes);
    let mut at = 0;
    while let Some(header) = swallowing.partial.get(at..at + 5) {
        let length = u32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
        let end = at + 1 + length;
        if end > swallowing.partial.len() {
            break;
        }
        let kind = header[0];
        at = end;
        if kind == b'Z' {
            swallowing.ready_left -= 1;
            if swallowing.ready_left == 0 {
                let mut passed = std::mem::take(&mut swallowing.answer);
                passed.extend_from_slice(&swallowing.partial[at..]);
                *replacing = None;
                return passed;
            }
        }
    }
    swallowing.partial.drain(..at);
    Vec::new()
}

/// A backend message: its type, then its length (itself included) and `body`.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut message = vec![kind];
    message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(body);
    message
}

/// An ErrorResponse of `severity` with `sqlstate` and `text`.
fn error(severity: &str, sqlstate: &str, text: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', sqlstate),
        (b'M', text),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    message(b'E', &fields)
}

/// ReadyForQuery with transaction `status` (`I` idle, `T` in a transaction, `E` in a failed
/// one).
fn ready_for_query(status: u8) -> Vec<u8> {
    message(b'Z', &[status])
}

/// A simple-protocol Query holding `sql`.
fn simple_query(sql: &str) -> Vec<u8> {
    message(b'Q', &[sql.as_bytes(), &[0]].concat())
}

/// An address on 127.0.0.1 whose connection attempts are never answered: a listener that never
/// accepts, with its accept queue full, so that the kernel drops every further SYN and a
/// client's `connect` waits in SYN_SENT — a server host that is down behind a firewall that
/// drops packets. Stays so until dropped.
pub struct Unreachable {
    port: u16,
    _listener: TcpListener,
    /// The connections that filled the accept queue.
    _queued: Vec<TcpStream>,
}

impl Unreachable {
    /// The longest a connection attempt to a listener that still has room takes here.
    const ANSWERED_WITHIN: Duration = Duration::from_millis(200);

    /// Starts one: binds a free port, shrinks its accept queue to the least the kernel allows,
    /// and fills it until a connection attempt goes unanswered.
    pub fn start() -> Unreachable {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port");
        shrink_accept_queue(&listener);
        let address = listener.local_addr().expect("its address");
        let mut queued = Vec::new();
        loop {
            match TcpStream::connect_timeout(&address, Self::ANSWERED_WITHIN) {
                Ok(stream) => queued.push(stream),
                Err(error) if error.kind() == std::io::ErrorKind::TimedOut => break,
                Err(error) => panic!("filling the accept queue of {address}: {error}"),
            }
            assert!(
                queued.len() < 10_000,
                "the accept queue of {address} never filled"
            );
        }
        Unreachable {
            port: address.port(),
            _listener: listener,
            _queued: queued,
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// `listen(2)` again with a backlog of 0: Linux then queues a single connection (the standard
/// library listens with a backlog of up to 4096, too many to fill quickly).
fn shrink_accept_queue(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    extern "C" {
        fn listen(socket: std::os::raw::c_int, backlog: std::os::raw::c_int)
            -> std::os::raw::c_int;
    }
    // SAFETY: the descriptor is a bound, listening TCP socket owned by `listener`, alive for
    // the call; listen(2) on it only changes the length of its accept queue.
    let status = unsafe { listen(listener.as_raw_fd(), 0) };
    assert_eq!(status, 0, "listen(2): {}", std::io::Error::last_os_error());
}
