//! Across processes: writers that have waited long for SQLite's write lock say so, and the
//! others let them go first.
//!
//! Within a process, writers take turns in a [`WriteQueue`](super::write_queue::WriteQueue);
//! between processes there is only SQLite's lock, which goes to whoever asks at the moment it is
//! free. A process whose writers follow each other closely (the next one begins a few
//! microseconds after the last one commits) would keep it for as long as it has work, while
//! another process's writer, polling every millisecond, keeps missing the gaps. So a writer
//! that has waited [`LONG_WAIT`](super::sqlite_session::LONG_WAIT) for the lock marks itself
//! (a shared lock on byte 0 of a small file beside the database, `<database>-writers`), and a
//! writer about to begin looks for such a mark first: while another process's long waiter is
//! there, it waits (without asking SQLite), and the long waiter gets the lock at its next try.
//!
//! The marks are Linux's open-file-description locks (`F_OFD_SETLK`): they belong to the file
//! this pool opened, so that one pool's own mark never holds its own writers back, and the kernel
//! drops them with the file when a process ends however it ends — a crashed process leaves no
//! mark behind. The file holds no data; the last pool to close it removes it (it is made again
//! by the next). Elsewhere than on Linux, and for a database that is not a file (`:memory:`),
//! there is no such file: writers there rely on the steady busy handler alone.

use std::path::Path;

/// One pool's view of the marks: its own handle on the file.
#[derive(Debug)]
pub struct LongWaiters {
    #[cfg(target_os = "linux")]
    inner: linux::Marks,
}

impl LongWaiters {
    /// The marks of the writers of `database` (the main database file's path), or `None` where
    /// there can be none: not on Linux, or the file beside it cannot be made or opened.
    pub fn open(database: &Path) -> Option<LongWaiters> {
        #[cfg(target_os = "linux")]
        return linux::Marks::open(database).map(|inner| LongWaiters { inner });
        #[cfg(not(target_os = "linux"))]
        {
            let _ = database;
            None
        }
    }

    /// Whether a writer of another pool (another process, as a rule) has marked itself.
    pub fn others_waiting_long(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.inner.others_marked();
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// Marks one more writer of this pool as waiting long (until [`withdraw`](Self::withdraw)).
    pub fn announce(&self) {
        #[cfg(target_os = "linux")]
        self.inner.add_mark();
    }

    /// Takes one writer's mark back.
    pub fn withdraw(&self) {
        #[cfg(target_os = "linux")]
        self.inner.remove_mark();
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use crate::sync::lock;
    use std::fs::{File, OpenOptions};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    /// The byte whose shared locks are the marks.
    const MARK: i64 = 0;
    /// The byte every pool holds a shared lock on while it has the file open; the last one out
    /// takes it exclusively and removes the file.
    const OPEN: i64 = 1;

    #[derive(Debug)]
    pub struct Marks {
        file: File,
        path: PathBuf,
        /// This pool's writers marked now: the lock on [`MARK`] is held while it is above 0.
        marked: Mutex<usize>,
    }

    impl Marks {
        pub fn open(database: &Path) -> Option<Marks> {
            let mut name = database.as_os_str().to_owned();
            name.push("-writers");
            let path = PathBuf::from(name);
            // A few tries: the file may be removed by the last pool leaving just as it opens.
            for _ in 0..5 {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .ok()?;
                if !set_lock(&file, OPEN, libc::F_RDLCK as i16) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    continue;
                }
                // Removed (and perhaps made again) between the open and the lock: not the file
                // the others use.
                let same = match (file.metadata(), std::fs::metadata(&path)) {
                    (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
                    _ => false,
                };
                if same {
                    return Some(Marks {
                        file,
                        path,
                        marked: Mutex::new(0),
                    });
                }
            }
            None
        }

        pub fn others_marked(&self) -> bool {
            let mut probe = flock(libc::F_WRLCK as i16, MARK);
            // SAFETY: F_OFD_GETLK reads and writes only `probe`, on a descriptor we own.
            let answer =
                unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_OFD_GETLK, &mut probe) };
            answer == 0 && probe.l_type != libc::F_UNLCK as i16
        }

        pub fn add_mark(&self) {
            let mut marked = lock(&self.marked);
            if *marked == 0 {
                set_lock(&self.file, MARK, libc::F_RDLCK as i16);
            }
            *marked += 1;
        }

        pub fn remove_mark(&self) {
            let mut marked = lock(&self.marked);
            *marked = marked.saturating_sub(1);
            if *marked == 0 {
                set_lock(&self.file, MARK, libc::F_UNLCK as i16);
            }
        }
    }

    impl Drop for Marks {
        /// The last pool out (no other holds [`OPEN`]) removes the file, under its exclusive
        /// lock so that no one opens it meanwhile unnoticed.
        fn drop(&mut self) {
            if set_lock(&self.file, OPEN, libc::F_WRLCK as i16) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }

    /// A request for one byte's lock. OFD locks need `l_pid` 0, and some targets have more
    /// fields: all start at zero.
    fn flock(kind: i16, byte: i64) -> libc::flock {
        // SAFETY: `flock` is a plain C struct, for which all zeroes is a valid value.
        let mut request: libc::flock = unsafe { std::mem::zeroed() };
        request.l_type = kind;
        request.l_whence = libc::SEEK_SET as i16;
        request.l_start = byte;
        request.l_len = 1;
        request
    }

    /// Sets (or with `F_UNLCK` clears) this file description's lock on `byte`, without waiting;
    /// whether it was done.
    fn set_lock(file: &File, byte: i64, kind: i16) -> bool {
        let request = flock(kind, byte);
        // SAFETY: F_OFD_SETLK reads only `request`, on a descriptor we own.
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &request) == 0 }
    }
}
