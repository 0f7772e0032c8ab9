//! Stalled server connections: a statement that gets no answer for too long has its socket shut
//! down from the client's side, so that libpq returns "server closed the connection" instead of
//! waiting for ever, and `run_transaction` treats it as the lost connection it is (retried on a
//! fresh one before the commit; settled by the probe during it).
//!
//! libpq waits for an answer without any limit of its own, and neither TCP keepalives nor
//! `tcp_user_timeout` notice a peer whose kernel still acknowledges: a frozen server process, a
//! proxy or load balancer that stops forwarding. The server's own `statement_timeout` needs a
//! server that answers. Only the client can bound the wait.
//!
//! Diesel does not hand out libpq's socket, so it is found the one way open to a user of the
//! library: the set of sockets this process has open is read before and after the connection
//! is made (`/proc/self/fd` on Linux, `/dev/fd` elsewhere), with connection set-up serialised so
//! that the one new socket is the connection's. If the difference is not exactly one socket (an
//! unusual process opening sockets at that moment), that connection goes unwatched.

use crate::sync::lock;
use std::collections::BTreeSet;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, Weak};
use std::time::{Duration, Instant};

/// Default of how long a statement may go without an answer before its connection counts as
/// stalled (see [`crate::db::ConnectOptions::stall_timeout`]).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the watchdog looks at the statements in flight.
const WATCHDOG_PERIOD: Duration = Duration::from_millis(200);

/// Serialises the making of server connections (see the module documentation).
static ESTABLISHING: Mutex<()> = Mutex::new(());

/// Every watched connection, for the watchdog.
static WATCHED: Mutex<Vec<Weak<Watched>>> = Mutex::new(Vec::new());

/// Starts the watchdog thread once per process.
static WATCHDOG: Once = Once::new();

/// One open socket: its descriptor and its inode (so that a descriptor number reused for
/// another socket is never mistaken for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Socket {
    fd: RawFd,
    inode: u64,
}

/// Runs `connect` (which opens one server connection) and returns its result with the socket
/// it opened, if that socket could be told apart.
pub fn establish<T, E>(connect: impl FnOnce() -> Result<T, E>) -> (Result<T, E>, Option<Socket>) {
    let _serial = lock(&ESTABLISHING);
    let before = open_sockets();
    let result = connect();
    if result.is_err() {
        return (result, None);
    }
    let after = open_sockets();
    let mut new = after.difference(&before);
    let socket = match (new.next(), new.next()) {
        (Some(socket), None) => Some(*socket),
        _ => None,
    };
    (result, socket)
}

/// A watched connection's side of the watchdog: tell it when a statement starts and ends.
/// Dropping it stops the watch.
pub struct StallWatch(Arc<Watched>);

struct Watched {
    socket: Socket,
    bound: Duration,
    /// When the statement in flight was sent (`None`: none is).
    busy_since: Mutex<Option<Instant>>,
    /// Set once the watchdog has shut the socket down.
    cut: Arc<AtomicBool>,
}

/// Whether the watchdog closed a connection: its statement went unanswered past the bound.
#[derive(Debug, Clone)]
pub struct StallSignal(Arc<AtomicBool>);

impl StallSignal {
    /// Whether the watchdog has closed the connection.
    pub fn stalled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl StallWatch {
    /// Watches `socket`: a statement in flight longer than `bound` shuts it down.
    pub fn new(socket: Socket, bound: Duration) -> StallWatch {
        let watched = Arc::new(Watched {
            socket,
            bound,
            busy_since: Mutex::new(None),
            cut: Arc::new(AtomicBool::new(false)),
        });
        lock(&WATCHED).push(Arc::downgrade(&watched));
        WATCHDOG.call_once(|| {
            // If the thread cannot be started, connections are simply not watched.
            let _ = std::thread::Builder::new()
                .name("roachbank-stall-watchdog".into())
                .spawn(watchdog);
        });
        StallWatch(watched)
    }

    /// Tells, for as long as it is kept, whether the watchdog closed this connection.
    pub fn signal(&self) -> StallSignal {
        StallSignal(Arc::clone(&self.0.cut))
    }

    /// A statement was sent.
    pub fn statement_started(&self) {
        *lock(&self.0.busy_since) = Some(Instant::now());
    }

    /// The statement's answer arrived (or it failed).
    pub fn statement_finished(&self) {
        *lock(&self.0.busy_since) = None;
    }
}

/// The watchdog: shuts down the socket of every statement in flight past its bound.
fn watchdog() {
    loop {
        std::thread::sleep(WATCHDOG_PERIOD);
        let watched: Vec<Arc<Watched>> = {
            let mut all = lock(&WATCHED);
            all.retain(|weak| weak.strong_count() > 0);
            all.iter().filter_map(Weak::upgrade).collect()
        };
        for connection in watched {
            let mut busy_since = lock(&connection.busy_since);
            if busy_since.is_some_and(|since| since.elapsed() >= connection.bound) {
                // Once per statement: the failure that follows ends it.
                *busy_since = None;
                connection.cut.store(true, Ordering::SeqCst);
                shut_down(connection.socket);
            }
        }
    }
}

/// Shuts `socket` down both ways, if its descriptor still holds that very socket; libpq's wait
/// then ends with "server closed the connection unexpectedly". The descriptor stays open (libpq
/// closes it).
fn shut_down(socket: Socket) {
    if inode_of(socket.fd) != Some(socket.inode) {
        return;
    }
    // SAFETY: the descriptor is open and is a socket (checked just above); ManuallyDrop keeps
    // the TcpStream from closing it. shutdown(2) applies to any connected socket.
    let stream =
        std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(socket.fd) });
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// The sockets this process has open.
fn open_sockets() -> BTreeSet<Socket> {
    let Ok(entries) = std::fs::read_dir(fd_dir()) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<RawFd>().ok())
        .filter_map(|fd| inode_of(fd).map(|inode| Socket { fd, inode }))
        .collect()
}

/// The inode of `fd` if it is an open socket.
fn inode_of(fd: RawFd) -> Option<u64> {
    let metadata = std::fs::metadata(format!("{}/{fd}", fd_dir())).ok()?;
    metadata.file_type().is_socket().then(|| metadata.ino())
}

fn fd_dir() -> &'static str {
    if cfg!(target_os = "linux") {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn the_one_socket_a_connection_opens_is_found_and_a_stall_shuts_it_down() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        // The kernel completes the connection before `accept`, so the one new socket is ours.
        let (client, socket) = establish(|| TcpStream::connect(address));
        let mut client = client.unwrap();
        // The peer accepts and then never answers: a stalled server.
        let _held_open = listener.accept().unwrap();
        let socket = socket.expect("the new socket is found");
        let watch = StallWatch::new(socket, Duration::from_millis(300));
        watch.statement_started();
        let started = Instant::now();
        let mut buffer = [0u8; 1];
        // Without the watchdog this read would wait for ever.
        let read = client.read(&mut buffer);
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(watch.signal().stalled(), "the cut is told");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
