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
//! that the one new socket is the connection's. When the URL names the server's ports, new
//! sockets connected to other ports (a proxy or another client in the same process, say) are
//! not counted. If several new sockets go to the server's ports (other threads of the process
//! connecting there without coming through here: another library's pool, a proxy, a test
//! suite's other tests), the new connection asks the server which client port it sees it from
//! (`inet_client_port()`) and the socket bound to that port is the one; if the server cannot
//! say (a Unix-domain socket, a proxy in between), that connection goes unwatched.
//!
//! A connection is never kept waiting for another one's set-up longer than it may take itself
//! (its connect timeout): past that — the one ahead is stuck on a server that never answers —
//! it is made alongside. Its socket is still found when it is the only new one (the stuck
//! connection opened its own before); when another appeared meanwhile, the connection goes
//! unwatched rather than watched wrongly.

use crate::sync::lock;
use std::collections::BTreeSet;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, TryLockError, Weak};
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

/// How often a connection waiting for another one's set-up looks whether it is done.
const ESTABLISHING_POLL: Duration = Duration::from_millis(2);

/// Runs `connect` (which opens one server connection, to one of `server_ports` if that list
/// is not empty) and returns its result with the socket it opened, if that socket could be told
/// apart. Waits at most `wait` for a connection being made by another thread (see the module
/// documentation). When several new sockets go to the server's ports — other threads of this
/// process connecting there without coming through here (another library's pool, a proxy) —
/// `client_port` asks the new connection which client port the server sees it from, and the
/// socket bound to that port is the one (`None`: the connection goes unwatched).
pub fn establish<T, E>(
    wait: Duration,
    server_ports: &[u16],
    connect: impl FnOnce() -> Result<T, E>,
    client_port: impl FnOnce(&mut T) -> Option<u16>,
) -> (Result<T, E>, Option<Socket>) {
    let _serial = lock_within(&ESTABLISHING, wait);
    let before = open_sockets();
    let mut result = connect();
    let Ok(conn) = result.as_mut() else {
        return (result, None);
    };
    let after = open_sockets();
    let only = |mut sockets: Vec<Socket>| sockets.pop().filter(|_| sockets.is_empty());
    let new: Vec<Socket> = after.difference(&before).copied().collect();
    // The connection's own socket is new, and goes to one of the server's ports: if exactly
    // one new socket does, it is that one.
    let to_server: Vec<Socket> = new
        .iter()
        .copied()
        .filter(|socket| may_go_to(*socket, server_ports))
        .collect();
    let found = if to_server.len() > 1 {
        client_port(conn).and_then(|port| {
            only(
                to_server
                    .into_iter()
                    .filter(|socket| local_port(*socket) == Some(port))
                    .collect(),
            )
        })
    } else {
        only(to_server).or_else(|| only(new))
    };
    (result, found)
}

/// The local port `socket` is bound to, if it is a TCP socket.
fn local_port(socket: Socket) -> Option<u16> {
    // SAFETY: as in `may_go_to`; getsockname(2) (all `local_addr` does) changes nothing.
    let stream =
        std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(socket.fd) });
    stream.local_addr().ok().map(|address| address.port())
}

/// Whether `socket` may be connected to one of `ports`: it is, or it is not an IP socket (a
/// Unix-domain one), or `ports` is empty (not known). An IP socket with no peer (a listener
/// another thread just bound, say) is connected to nothing: never a candidate.
fn may_go_to(socket: Socket, ports: &[u16]) -> bool {
    if ports.is_empty() {
        return true;
    }
    // SAFETY: `socket` was just found open as a socket; ManuallyDrop keeps the TcpStream from
    // closing it, and getpeername(2) and getsockname(2) (all `peer_addr` and `local_addr` do)
    // change nothing. A Unix-domain socket's addresses are not IP ones: both fail, and the
    // socket stays a candidate.
    let stream =
        std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(socket.fd) });
    match stream.peer_addr() {
        Ok(peer) => ports.contains(&peer.port()),
        Err(_) => stream.local_addr().is_err(),
    }
}

/// `mutex` locked, if it can be within `wait`.
fn lock_within(mutex: &Mutex<()>, wait: Duration) -> Option<MutexGuard<'_, ()>> {
    let gives_up = Instant::now() + wait;
    loop {
        match mutex.try_lock() {
            Ok(guard) => return Some(guard),
            // It guards no data: a panic while it was held broke nothing.
            Err(TryLockError::Poisoned(poisoned)) => return Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) if Instant::now() < gives_up => {
                std::thread::sleep(ESTABLISHING_POLL)
            }
            Err(TryLockError::WouldBlock) => return None,
        }
    }
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
    use std::os::fd::AsRawFd;

    #[test]
    fn the_one_socket_a_connection_opens_is_found_and_a_stall_shuts_it_down() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        // The kernel completes the connection before `accept`, so the one new socket is ours.
        let (client, socket) = establish(
            Duration::from_secs(10),
            &[address.port()],
            || TcpStream::connect(address),
            |_| None,
        );
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

    #[test]
    fn a_connection_waits_for_another_ones_set_up_no_longer_than_it_is_allowed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let wait = Duration::from_millis(300);
        // Another connection's set-up that never ends (a server that never answers).
        let (stuck, release) = std::sync::mpsc::channel::<()>();
        let (holding, held) = std::sync::mpsc::channel();
        let ahead = std::thread::spawn(move || {
            establish(
                Duration::from_secs(60),
                &[],
                || {
                    holding.send(()).unwrap();
                    release.recv()
                },
                |_| None,
            )
        });
        held.recv().unwrap();
        let started = Instant::now();
        let (client, socket) = establish(
            wait,
            &[address.port()],
            || TcpStream::connect(address),
            |_| None,
        );
        let took = started.elapsed();
        stuck.send(()).unwrap();
        ahead.join().unwrap().0.unwrap();
        client.unwrap();
        assert!(took >= wait && took < wait * 10, "{took:?}");
        // Made alongside, its socket is still told apart: the only new one.
        assert!(socket.is_some());
    }

    #[test]
    fn the_connections_socket_is_told_from_others_opened_meanwhile_by_its_port() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let (server_address, other_address) =
            (server.local_addr().unwrap(), other.local_addr().unwrap());
        // Like an in-process proxy: while the connection is made, the listener accepts it
        // and another socket goes elsewhere.
        let (result, socket) = establish(
            Duration::from_secs(10),
            &[server_address.port()],
            || {
                let client = TcpStream::connect(server_address)?;
                let accepted = server.accept()?.0;
                let elsewhere = TcpStream::connect(other_address)?;
                Ok::<_, std::io::Error>((client, accepted, elsewhere))
            },
            |_| None,
        );
        let (client, _accepted, _elsewhere) = result.unwrap();
        let socket = socket.expect("the client's socket is told apart");
        assert_eq!(
            inode_of(client.as_raw_fd()),
            Some(socket.inode),
            "the socket found is the client's"
        );
        // Without the ports, three new sockets: none can be told apart.
        let (_, unknown) = establish(
            Duration::from_secs(10),
            &[],
            || {
                let client = TcpStream::connect(server_address)?;
                let accepted = server.accept()?.0;
                Ok::<_, std::io::Error>((client, accepted))
            },
            |_| None,
        );
        assert_eq!(unknown, None);
    }

    #[test]
    fn a_listener_another_thread_binds_meanwhile_leaves_the_connections_socket_found() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        // Another test of the same process binds a listener while the connection is made
        // (seen once in CI: the connection then went unwatched).
        let (result, socket) = establish(
            Duration::from_secs(10),
            &[address.port()],
            || {
                let client = TcpStream::connect(address)?;
                let listener = TcpListener::bind("127.0.0.1:0")?;
                Ok::<_, std::io::Error>((client, listener))
            },
            |_| None,
        );
        let (client, _listener) = result.unwrap();
        let socket = socket.expect("the connection's socket is found");
        assert_eq!(inode_of(client.as_raw_fd()), Some(socket.inode));
    }

    #[test]
    fn a_connections_socket_among_others_to_the_same_server_is_told_by_its_client_port() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        // While the connection is made, another thread of the process (a pool of another
        // library, say) connects to the same server: two new sockets go to its port.
        // `server_says` is what the server answers when asked which client port it sees.
        let two_to_the_server = |server_says: fn(&mut (TcpStream, TcpStream)) -> Option<u16>| {
            establish(
                Duration::from_secs(10),
                &[address.port()],
                || {
                    let client = TcpStream::connect(address)?;
                    let other = TcpStream::connect(address)?;
                    Ok::<_, std::io::Error>((client, other))
                },
                server_says,
            )
        };
        let (result, socket) =
            two_to_the_server(|(client, _)| client.local_addr().ok().map(|local| local.port()));
        let (client, _other) = result.unwrap();
        let socket = socket.expect("the connection's socket is told apart by its port");
        assert_eq!(
            inode_of(client.as_raw_fd()),
            Some(socket.inode),
            "the socket found is the connection's"
        );
        // If the server cannot say (a Unix-domain socket, a proxy between), it stays unwatched.
        let (_, unknown) = two_to_the_server(|_| None);
        assert_eq!(unknown, None);
    }
}
