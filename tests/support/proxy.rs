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
//!
//! The trigger is a statement being *run*: a simple query holding the text, an unnamed Parse
//! holding it (libpq sends its Bind and Execute in the same write), or the Bind of a statement
//! prepared earlier on the connection from such a text. Preparing a named statement runs
//! nothing, so its Parse alone does not trigger — a statement Diesel keeps prepared is cut
//! when it is executed, as it is on every use after its first. Triggers armed one after
//! another fire in that order, each once.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

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
    closed: AtomicBool,
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
}

impl CuttingProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy's port");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(ProxyState {
            cut_on: Mutex::new(VecDeque::new()),
            cuts: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        });
        let upstream = upstream.to_string();
        let accept_state = Arc::clone(&state);
        thread::spawn(move || {
            for client in listener.incoming() {
                if accept_state.closed.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
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
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `closed`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
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
    // client -> server, watching for the trigger
    thread::spawn(move || {
        let (mut from, mut to) = (client_reader, server_writer);
        let mut buffer = vec![0u8; 64 * 1024];
        let mut prepared = HashMap::new();
        loop {
            let n = match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buffer[..n];
            let (run, prepared_now) = statements_sent(chunk, &mut prepared);
            // `Some(action)` when this read triggers the cut.
            let hit = {
                let mut trigger = state.cut_on.lock().unwrap();
                let hit = trigger
                    .front()
                    .filter(|armed| {
                        let texts = if armed.on_prepare {
                            &prepared_now
                        } else {
                            &run
                        };
                        texts.iter().any(|text| contains(text, &armed.needle))
                    })
                    .map(|armed| armed.action);
                if hit.is_some() {
                    trigger.pop_front();
                }
                hit
            };
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
            if to.write_all(chunk).is_err() {
                break;
            }
            if hit.is_some() {
                state.cuts.fetch_add(1, Ordering::SeqCst);
                // Let the statement reach the server before the link goes.
                thread::sleep(std::time::Duration::from_millis(50));
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
            let n = match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if cut_seen_by_reader.load(Ordering::SeqCst) {
                break;
            }
            if to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
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
