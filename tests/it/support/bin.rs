//! Running the `roachbank` binary in tests: in a directory of the test's choosing, with
//! `DATABASE_URL` and libpq's environment removed (unless the test adds them back), killed if it
//! overruns; and the checks every end-to-end test makes on what it printed.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest any single command may run before the test gives up on it (and kills it).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// A fresh, empty temporary directory to run the binary in.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("roachbank-cli-")
        .tempdir()
        .expect("create a temporary directory")
}

/// The binary as a command: `args`, run in `dir`, with `envs` added to a cleaned environment,
/// stdin closed, stdout and stderr piped.
pub fn command(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_roachbank"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        // So a panic says "panicked" and mentions RUST_BACKTRACE, which the checks look for.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        // libpq must not find a password or a timeout anywhere but in the URL.
        .env_remove("PGPASSWORD")
        .env_remove("PGPASSFILE")
        .env_remove("PGCONNECT_TIMEOUT")
        .env_remove("PGSERVICE")
        // Nor any other connection setting.
        .env_remove("PGAPPNAME")
        .env_remove("PGOPTIONS")
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .env_remove("PGSSLCERT")
        .env_remove("PGSSLKEY")
        .env_remove("ADMIN_DATABASE_URL")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A started binary whose piped output is read in the background.
pub struct Started {
    child: Child,
    args: Vec<String>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Started {
    /// Spawns `command`, hands the child to `after_spawn` (which may take its stdout, to close
    /// the pipe), then reads whatever pipes are left.
    pub fn start(mut command: Command, after_spawn: impl FnOnce(&mut Child)) -> Started {
        let args = command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        let mut child = command.spawn().expect("start the roachbank binary");
        after_spawn(&mut child);
        Started {
            stdout: child.stdout.take().map(read_to_end),
            stderr: child.stderr.take().map(read_to_end),
            child,
            args,
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child has ended.
    pub fn has_ended(&mut self) -> bool {
        self.child.try_wait().expect("poll roachbank").is_some()
    }

    /// Waits for the child to end, killing it (and failing the test, with what it said on
    /// stderr) if it is still running `within` from now.
    pub fn wait(mut self, within: Duration) -> Output {
        let waiting = Instant::now();
        let status: ExitStatus = loop {
            if let Some(status) = self.child.try_wait().expect("wait for roachbank") {
                break status;
            }
            if waiting.elapsed() > within {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "roachbank {:?} still running after {within:?}; killed it\nstderr so far: {}",
                    self.args,
                    String::from_utf8_lossy(&joined(self.stderr.take()))
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Output {
            status,
            stdout: joined(self.stdout.take()),
            stderr: joined(self.stderr.take()),
        }
    }
}

fn read_to_end(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn joined(reader: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    reader
        .map(|reader| reader.join().expect("read the child's output"))
        .unwrap_or_default()
}

/// Runs the binary with `args` in `dir`, with `envs` added to a cleaned environment; gives up
/// (killing the child) after `deadline`. Returns the output and how long the child ran.
pub fn run_timed(
    dir: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    deadline: Duration,
) -> (Output, Duration) {
    let started = Instant::now();
    let output = Started::start(command(dir, args, envs), |_| {}).wait(deadline);
    (output, started.elapsed())
}

/// Runs the binary with `args` in `dir`, `DATABASE_URL` removed, `envs` added.
pub fn run(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    run_timed(dir, args, envs, DEFAULT_DEADLINE).0
}

pub fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Everything the child said, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        stdout_of(output),
        stderr_of(output)
    )
}

/// Panics unless the command succeeded.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "expected success: {}",
        describe(output)
    );
    assert_no_panic(output);
}

/// Panics if the output shows a panic or a backtrace.
pub fn assert_no_panic(output: &Output) {
    let all = format!("{}{}", stdout_of(output), stderr_of(output));
    for bad in ["panicked", "RUST_BACKTRACE"] {
        assert!(
            !all.contains(bad),
            "output contains {bad:?}: {}",
            describe(output)
        );
    }
    assert!(
        !all.to_ascii_lowercase().contains("backtrace"),
        "output mentions a backtrace: {}",
        describe(output)
    );
}

/// Panics unless the command failed with exactly one non-empty line on stderr and no panic;
/// returns that line.
pub fn assert_one_line_error(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected failure: {}",
        describe(output)
    );
    assert_no_panic(output);
    let stderr = stderr_of(output);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stderr: {}",
        describe(output)
    );
    assert!(
        !lines[0].trim().is_empty(),
        "the error line is empty: {}",
        describe(output)
    );
    lines[0].to_string()
}

/// Panics unless the command line was refused as bad usage in roachbank's one error line: exit
/// 2, nothing on stdout, no panic, stderr one line `roachbank: error: …; try `roachbank … --help``
/// (what clap found wrong, its "did you mean" kept, and where to read more). Returns the line.
pub fn assert_usage_line(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(2), "{}", describe(output));
    assert!(
        output.stdout.is_empty(),
        "wrote to stdout: {}",
        describe(output)
    );
    let line = assert_one_line_error(output);
    assert!(
        line.starts_with("roachbank: error: ") && line.ends_with(" --help`"),
        "not roachbank's usage line: {}",
        describe(output)
    );
    assert!(
        line.contains("; try `roachbank"),
        "no pointer to --help: {}",
        describe(output)
    );
    line
}

/// Panics unless neither stdout nor stderr contains `secret`.
pub fn assert_not_leaked(output: &Output, secret: &str) {
    assert!(
        !stdout_of(output).contains(secret) && !stderr_of(output).contains(secret),
        "output leaks {secret:?}: {}",
        describe(output)
    );
}

/// Names of the entries in `dir`, sorted.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list the directory")
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Starts `count` copies of the binary with `args` at once (in the current directory, cleaned
/// environment) and waits for them all; their outputs in start order.
pub fn run_at_once(count: usize, args: &[&str]) -> Vec<Output> {
    let dir = std::env::current_dir().expect("the current directory");
    let started: Vec<Started> = (0..count)
        .map(|_| Started::start(command(&dir, args, &[]), |_| {}))
        .collect();
    started
        .into_iter()
        .map(|child| child.wait(DEFAULT_DEADLINE))
        .collect()
}

/// Sends signal `name` (`"INT"`, `"TERM"`, `"STOP"`, `"CONT"`) to process `pid` with the
/// shell's own `kill`, so that no `kill` program (Debian's procps) need be installed; panics
/// if it fails.
pub fn send_signal(name: &str, pid: impl std::fmt::Display) {
    let pid = pid.to_string();
    let status = Command::new("sh")
        .args(["-c", r#"kill -s "$1" "$2""#, "sh", name, &pid])
        .status()
        .expect("run sh");
    assert!(status.success(), "kill -s {name} {pid}: {status}");
}
