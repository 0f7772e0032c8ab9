//! The binary on a terminal of its own: a pseudo-terminal (`openpty`) of a given width that is
//! the child's controlling terminal, so that what is typed on it — Ctrl-C — is handled by the
//! terminal as a person's key would be (SIGINT to the child, `^C` echoed); and a screen that
//! replays what the child wrote, to see what is left on it.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A child running on a pseudo-terminal, everything it writes to the terminal collected.
pub struct OnTerminal {
    child: std::process::Child,
    master: std::fs::File,
    written: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl OnTerminal {
    /// Starts `command` with a fresh terminal `columns` wide (24 rows) as its stdin, stdout,
    /// stderr and controlling terminal.
    pub fn start(mut command: Command, columns: u16) -> OnTerminal {
        let (mut master, mut slave) = (-1, -1);
        let size = libc::winsize {
            ws_row: 24,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two file descriptors into the integers given; the name is
        // not asked for and the terminal settings are the system's defaults (ISIG, ECHO,
        // ECHOCTL on).
        let opened = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here alone.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let stdio = || Stdio::from(slave.try_clone().expect("dup the terminal"));
        command.stdin(stdio()).stdout(stdio()).stderr(stdio());
        // SAFETY: setsid and ioctl are async-signal-safe; the child becomes the leader of a
        // session whose controlling terminal (and foreground process group) is the terminal.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .expect("start the roachbank binary on a terminal");
        drop(slave);
        let master = std::fs::File::from(master);
        let written = Arc::new(Mutex::new(Vec::new()));
        let mut from_terminal = master.try_clone().expect("dup the terminal's master");
        let collected = Arc::clone(&written);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once the child (the terminal's last user) has gone.
            while let Ok(n @ 1..) = from_terminal.read(&mut buf) {
                collected.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnTerminal {
            child,
            master,
            written,
            reader: Some(reader),
        }
    }

    /// Waits until what the child wrote contains `text`; panics after `within`.
    pub fn wait_for(&mut self, text: &str, within: Duration) {
        let started = Instant::now();
        while !String::from_utf8_lossy(&self.written.lock().unwrap()).contains(text) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ended ({status}) before writing {text:?}: {}", self.text());
            }
            assert!(
                started.elapsed() < within,
                "no {text:?} within {within:?}: {}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `keys` on the terminal.
    pub fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).expect("type on the terminal");
    }

    /// Waits for the child to end (killing it and failing after `within`); returns its status
    /// and everything it wrote to the terminal.
    pub fn wait(mut self, within: Duration) -> (ExitStatus, Vec<u8>) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for roachbank") {
                break status;
            }
            if started.elapsed() > within {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("still running after {within:?}; killed it: {}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let written = self.written.lock().unwrap().clone();
        (status, written)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.written.lock().unwrap()).into_owned()
    }
}

/// The screen of a terminal `columns` wide after `written` (from its first row, scrolling
/// ignored): printable characters with the terminal's deferred wrap (a character written in the
/// last column leaves the cursor there, and the next one starts a new row), `\r`, `\n`, and the
/// escapes indicatif uses — cursor up and down (`ESC[nA`, `ESC[nB`) and erase line (`ESC[2K`).
/// Rows without their trailing blanks.
pub fn screen(written: &[u8], columns: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(written);
    let mut rows: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut column, mut wrap_pending) = (0usize, 0usize, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' if chars.peek() == Some(&'[') => {
                chars.next();
                let mut digits = String::new();
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    digits.push(d);
                }
                let n: usize = digits.parse().unwrap_or(1);
                match chars.next() {
                    Some('A') => row = row.saturating_sub(n),
                    Some('B') => row += n,
                    Some('K') => rows[row].clear(),
                    _ => {}
                }
                wrap_pending = false;
            }
            '\r' => {
                column = 0;
                wrap_pending = false;
            }
            '\n' => {
                row += 1;
                wrap_pending = false;
            }
            c if c.is_control() => {}
            c => {
                if wrap_pending {
                    row += 1;
                    column = 0;
                    wrap_pending = false;
                }
                if rows.len() <= row {
                    rows.resize(row + 1, Vec::new());
                }
                let line = &mut rows[row];
                if line.len() <= column {
                    line.resize(column + 1, ' ');
                }
                line[column] = c;
                if column + 1 == columns {
                    wrap_pending = true;
                } else {
                    column += 1;
                }
            }
        }
        if rows.len() <= row {
            rows.resize(row + 1, Vec::new());
        }
    }
    rows.into_iter()
        .map(|line| line.into_iter().collect::<String>().trim_end().to_string())
        .collect()
}
