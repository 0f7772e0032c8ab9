//! A PostgreSQL server for the integration tests: either the one named by
//! `TEST_DATABASE_URL`, or a throwaway server started by the test binary itself.

use roachbank::db::ConnectionUrl;
use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Environment variable naming an existing server to use instead of a throwaway one.
const ENV_URL: &str = "TEST_DATABASE_URL";

/// Message for a machine without PostgreSQL server binaries and without `TEST_DATABASE_URL`.
const NO_BINARIES: &str = "server tests need PostgreSQL server binaries (initdb, pg_ctl): \
run scripts/test, which installs them (or Debian: apt-get install postgresql), or set \
TEST_DATABASE_URL to an existing CockroachDB/PostgreSQL URL";

/// The `psql` client used by [`TestServer::psql`], found on `PATH` (Debian's `/usr/bin/psql`;
/// `scripts/test` puts Homebrew's keg-only PostgreSQL on `PATH` too).
const PSQL: &str = "psql";

/// How many free ports to try before giving up on starting the throwaway server.
const START_ATTEMPTS: usize = 3;

/// Where server tests get their PostgreSQL: `TEST_DATABASE_URL` if set (an existing
/// CockroachDB/PostgreSQL; admin rights to `CREATE DATABASE`), else one throwaway
/// server for the test binary, started on first use (`std::sync::OnceLock`).
///
/// The throwaway server is stopped and its directory removed by a detached watchdog
/// shell once the test process has exited (statics are never dropped).
pub fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var(ENV_URL) {
        Ok(url) if !url.trim().is_empty() => TestServer::external(url.trim().to_string()),
        _ => TestServer::start_throwaway(&ServerSpec::default()),
    })
}

/// What is special about a throwaway server: its `pg_hba.conf`, extra `postgresql.conf`
/// settings, and files to put in place before it starts.
pub struct ServerSpec<'a> {
    /// The whole `pg_hba.conf`.
    pub hba: &'a str,
    /// Lines appended to `postgresql.conf`.
    pub settings: &'a str,
    /// Called with the server's directory and its data directory after `initdb`, before the
    /// server starts (as root when we are root; files the server reads must then be handed
    /// to user `postgres`, see [`TestServer::give_to_server`]).
    pub prepare: &'a dyn Fn(&Path, &Path),
}

/// Group role whose members must give their password (SCRAM) on the suite's server, so a
/// test can check a password for real (members are made by the tests; the role is created by
/// the first test that needs it).
pub const PASSWORD_CHECKED_GROUP: &str = "rb_password_checked";

/// The suite's ordinary server: trust for everyone on loopback except `pwuser` and members of
/// [`PASSWORD_CHECKED_GROUP`], who must give a password (SCRAM).
const DEFAULT_HBA: &str = "# written by tests/it/support/pg_server.rs\n\
     local all all                trust\n\
     host  all pwuser 127.0.0.1/32 scram-sha-256\n\
     host  all +rb_password_checked 127.0.0.1/32 scram-sha-256\n\
     host  all all    127.0.0.1/32 trust\n\
     host  all all    ::1/128      trust\n";

/// Durability off for the tests: a crash loses nothing a test needs, and fsync would only
/// make the suite slower.
const TEST_SETTINGS: &str = "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n";

impl Default for ServerSpec<'_> {
    fn default() -> Self {
        ServerSpec {
            hba: DEFAULT_HBA,
            settings: TEST_SETTINGS,
            prepare: &|_, _| {},
        }
    }
}

/// A new throwaway server with PostgreSQL's default durability (fsync on), for benchmarks
/// whose figures should match a real server's. Not shared: each call starts one.
pub fn start_durable_server() -> TestServer {
    TestServer::start_throwaway(&ServerSpec {
        settings: "",
        ..ServerSpec::default()
    })
}

/// The server the tests run against (see [`server()`]).
pub struct TestServer {
    /// URL of the administrative database (e.g. `postgresql://postgres@127.0.0.1:PORT/postgres`).
    admin_url: String,
    /// Host part of `admin_url`.
    host: String,
    /// Port part of `admin_url`.
    port: u16,
    /// The throwaway server's parts; `None` when `TEST_DATABASE_URL` is used.
    own: Option<Throwaway>,
    /// Whether `version()` says CockroachDB (asked once, on first need).
    cockroach: OnceLock<bool>,
}

/// The pieces of a throwaway server started by this test binary.
struct Throwaway {
    /// Temporary directory holding `data/`, `server.log` and the Unix socket.
    /// Kept for the life of the process; the watchdog removes it afterwards.
    dir: PathBuf,
    /// The data directory (`<dir>/data`).
    data_dir: PathBuf,
    /// The server log (`<dir>/server.log`).
    log: PathBuf,
    /// `pg_ctl` to use.
    pg_ctl: PathBuf,
    /// Whether initdb/pg_ctl are run as user `postgres` through `runuser` (we are root).
    as_postgres: bool,
    /// Serialises restarts.
    control: Mutex<()>,
}

impl TestServer {
    /// URL of the server's administrative database (`postgres` for the throwaway server,
    /// whatever `TEST_DATABASE_URL` names otherwise).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Host the server listens on (`127.0.0.1` for the throwaway server).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether this is our own throwaway server (so it may be restarted or killed);
    /// `false` when `TEST_DATABASE_URL` is used.
    pub fn is_throwaway(&self) -> bool {
        self.own.is_some()
    }

    /// Log file of the throwaway server; `None` when `TEST_DATABASE_URL` is used.
    pub fn log_path(&self) -> Option<&Path> {
        self.own.as_ref().map(|own| own.log.as_path())
    }

    /// Whether the server is CockroachDB (by `SELECT version()`; asked once).
    pub fn is_cockroachdb(&self) -> bool {
        *self.cockroach.get_or_init(|| {
            self.own.is_none()
                && self
                    .psql(&db_name_of(&self.admin_url), "SELECT version()")
                    .contains("CockroachDB")
        })
    }

    /// URL of database `database` on the same server: `admin_url` with its path
    /// replaced, user, host, port and query string kept.
    pub fn url_for(&self, database: &str) -> String {
        replace_url_path(&self.admin_url, database)
    }

    /// Runs `sql` in `database` through
    /// `psql -X -q -A -t -v ON_ERROR_STOP=1 -d URL -c SQL` and returns its trimmed
    /// standard output; panics with psql's standard error on failure.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        self.try_psql(database, sql).unwrap_or_else(|err| {
            panic!("psql failed in database {database:?} running {sql:?}: {err}")
        })
    }

    /// Like [`TestServer::psql`], but returns psql's failure (standard error and exit
    /// status) instead of panicking.
    pub fn try_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let url = self.url_for(database);
        let output = Command::new(PSQL)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(&url)
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("could not run {PSQL} (scripts/test installs it): {err}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(format!(
                "{} (url {url}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// Restarts the throwaway server (`pg_ctl restart -m fast -w`), dropping every
    /// connection. Panics when `TEST_DATABASE_URL` is used or the restart fails.
    pub fn restart(&self) {
        let own = self.own.as_ref().unwrap_or_else(|| {
            panic!("restart() needs the throwaway server, but {ENV_URL} is set")
        });
        let _guard = own
            .control
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // -l is required: without it the restarted server would write to (and hold
        // open) our stdout pipe, so `output()` would never see end of file.
        let output = own
            .command(&own.pg_ctl)
            .arg("-D")
            .arg(&own.data_dir)
            .arg("-l")
            .arg(&own.log)
            .args(["-w", "-t", "60", "-m", "fast", "restart"])
            .output()
            .expect("run pg_ctl restart");
        if !output.status.success() {
            panic!(
                "pg_ctl restart failed: {}\n--- server.log (tail) ---\n{}",
                describe(&output),
                log_tail(&own.log)
            );
        }
    }

    /// The server named by `TEST_DATABASE_URL`.
    fn external(url: String) -> TestServer {
        assert!(
            url.contains("://"),
            "{ENV_URL} must be a URL like postgresql://root@127.0.0.1:26257/defaultdb?sslmode=disable, got {url:?}"
        );
        let (host, port) = host_and_port(&url);
        TestServer {
            admin_url: url,
            host,
            port,
            own: None,
            cockroach: OnceLock::new(),
        }
    }

    /// Hands `path` to the server's owner (`postgres` when we are root) with mode `mode`, so
    /// the server can read it (and, for a private key, accepts it: owner-only).
    pub fn give_to_server(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        if running_as_root() {
            run_checked(
                Command::new("chown").arg("postgres:postgres").arg(path),
                "chown a server file",
            );
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|err| panic!("chmod {}: {err}", path.display()));
    }

    /// Initialises and starts a throwaway server as `spec` says (one that is not the suite's
    /// [`server()`]: say, a second one with TLS), and the watchdog that removes it once this
    /// process has exited. Always a throwaway, even when `TEST_DATABASE_URL` is set.
    pub fn start_throwaway(spec: &ServerSpec<'_>) -> TestServer {
        let bin = find_server_binaries().unwrap_or_else(|| panic!("{NO_BINARIES}"));
        let as_postgres = running_as_root();
        if as_postgres {
            let known = Command::new("id").args(["-u", "postgres"]).output();
            assert!(
                matches!(known, Ok(ref out) if out.status.success()),
                "running as root, so the throwaway PostgreSQL must run as user `postgres`, \
                 but there is no such user; run the tests as an ordinary user or set {ENV_URL}"
            );
        }

        // /tmp rather than $TMPDIR when root: user postgres must be able to reach it,
        // and Unix socket paths must stay short.
        let mut builder = tempfile::Builder::new();
        builder.prefix("roachbank-pg-");
        let temp = if as_postgres {
            builder.tempdir_in("/tmp")
        } else {
            builder.tempdir()
        }
        .expect("create a temporary directory for the throwaway PostgreSQL");
        // The watchdog removes the directory once this process has gone.
        let dir = temp.keep();
        let data_dir = dir.join("data");
        let log = dir.join("server.log");
        if as_postgres {
            run_checked(
                Command::new("chown").arg("postgres:postgres").arg(&dir),
                "chown the server directory",
            );
        }

        let own = Throwaway {
            dir: dir.clone(),
            data_dir: data_dir.clone(),
            log: log.clone(),
            pg_ctl: bin.join("pg_ctl"),
            as_postgres,
            control: Mutex::new(()),
        };

        // Arrange teardown first, so even a failed start leaves nothing behind.
        own.spawn_watchdog();

        let output = own
            .command(&bin.join("initdb"))
            .arg("-D")
            .arg(&data_dir)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        if !output.status.success() {
            panic!("initdb failed: {}", describe(&output));
        }

        fs::write(data_dir.join("pg_hba.conf"), spec.hba).expect("write pg_hba.conf");
        let conf = data_dir.join("postgresql.conf");
        let mut settings = fs::read_to_string(&conf).expect("read postgresql.conf");
        settings
            .push_str("\n# tests/it/support/pg_server.rs\npassword_encryption = scram-sha-256\n");
        settings.push_str(spec.settings);
        settings.push('\n');
        fs::write(&conf, settings).expect("write postgresql.conf");
        (spec.prepare)(&dir, &data_dir);

        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let options = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' \
                 -c max_connections=300 -c shared_buffers=128MB",
                dir.display()
            );
            let output = own
                .command(&own.pg_ctl)
                .arg("-D")
                .arg(&data_dir)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o"])
                .arg(&options)
                .arg("start")
                .output()
                .expect("run pg_ctl start");
            if output.status.success() {
                let host = "127.0.0.1".to_string();
                return TestServer {
                    admin_url: format!("postgresql://postgres@{host}:{port}/postgres"),
                    host,
                    port,
                    own: Some(own),
                    cockroach: OnceLock::new(),
                };
            }
            failures.push(format!("port {port}: {}", describe(&output)));
        }
        panic!(
            "could not start the throwaway PostgreSQL in {} after {START_ATTEMPTS} attempts:\n{}\n\
             --- server.log (tail) ---\n{}",
            dir.display(),
            failures.join("\n"),
            log_tail(&log)
        );
    }
}

impl Throwaway {
    /// A command running `program` as the server's owner (via `runuser` when root),
    /// in the server directory (user postgres may not be able to enter our cwd).
    fn command(&self, program: &Path) -> Command {
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.current_dir(&self.dir).stdin(Stdio::null());
        command
    }

    /// Spawns a detached shell that waits for this process to exit (or become a
    /// zombie), then stops the server (`-m immediate`) and removes its directory.
    fn spawn_watchdog(&self) {
        let pid = std::process::id();
        let runuser = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do \
               state=$(sed 's/.*) //' /proc/{pid}/stat 2>/dev/null | cut -c1); \
               [ \"$state\" = Z ] && break; \
               sleep 0.5; \
             done; \
             if [ -f {data}/postmaster.pid ]; then {runuser}{pg_ctl} -D {data} stop -m immediate; fi; \
             rm -rf {dir}",
            data = shell_quote(&self.data_dir),
            pg_ctl = shell_quote(&self.pg_ctl),
            dir = shell_quote(&self.dir),
        );
        // The outer shell starts the watchdog in the background and exits at once, so
        // the watchdog is re-parented to init (fully detached) and there is nothing
        // left for us to reap.
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("( {script} ) </dev/null >/dev/null 2>&1 &"))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: a Ctrl-C aimed at the test run does not kill the watchdog.
            .process_group(0)
            .status()
            .expect("spawn the watchdog that stops the throwaway PostgreSQL");
        assert!(
            status.success(),
            "spawning the watchdog shell failed: {status}"
        );
    }
}

/// A fresh database on [`server()`] (or on another server, [`TestDb::on`]), named
/// `rb_<test-name-sanitised>_<random hex>`, created by [`TestDb::new`] and dropped
/// (`DROP DATABASE ... WITH (FORCE)` on PostgreSQL, `DROP DATABASE ... CASCADE` on
/// CockroachDB) when the value is dropped, ignoring errors then.
pub struct TestDb {
    /// The database name.
    pub name: String,
    /// URL of the database on its server.
    pub url: String,
    /// The server holding it.
    server: &'static TestServer,
}

impl TestDb {
    /// Creates a fresh database on [`server()`] for the test named `test_name` (any string;
    /// it is lower-cased, non-alphanumerics become `_`, and it is shortened to fit).
    pub fn new(test_name: &str) -> TestDb {
        TestDb::on(server(), test_name)
    }

    /// Like [`TestDb::new`], on `server` instead of the suite's shared one: for a test that
    /// disturbs its whole server (a restart), which must not drop the sessions of the tests
    /// running beside it in this process.
    pub fn on(server: &'static TestServer, test_name: &str) -> TestDb {
        let mut stem: String = test_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        // rb_ + stem + _ + 12 hex digits must fit PostgreSQL's 63-byte identifiers.
        stem.truncate(63 - 3 - 1 - 12);
        let name = format!(
            "rb_{stem}_{:012x}",
            rand::random::<u64>() & 0xffff_ffff_ffff
        );
        server.psql(
            &db_name_of(server.admin_url()),
            &format!("CREATE DATABASE \"{name}\""),
        );
        let url = server.url_for(&name);
        TestDb { name, url, server }
    }

    /// Runs `sql` in this database (see [`TestServer::psql`]); returns trimmed output.
    pub fn psql(&self, sql: &str) -> String {
        self.server.psql(&self.name, sql)
    }

    /// Waits until no session but psql's own is connected to this database (PostgreSQL's
    /// `pg_stat_activity`; empty on CockroachDB): a session's statistics reach
    /// `pg_stat_database` and `pg_stat_user_tables` when it ends. Panics after ten seconds.
    pub fn wait_for_sessions_to_end(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.psql(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        ) != "0"
        {
            assert!(
                Instant::now() < deadline,
                "the sessions on {} did not end within 10 s",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestDb {
    /// Drops the database, ignoring any error.
    fn drop(&mut self) {
        let server = self.server;
        let sql = if server.is_cockroachdb() {
            format!("DROP DATABASE IF EXISTS \"{}\" CASCADE", self.name)
        } else {
            format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)
        };
        let _ = server.try_psql(&db_name_of(server.admin_url()), &sql);
    }
}

/// The directory holding both `initdb` and `pg_ctl`: from `PATH` (symlinks resolved),
/// else the newest `/usr/lib/postgresql/*/bin`.
fn find_server_binaries() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if let Ok(initdb) = fs::canonicalize(dir.join("initdb")) {
                if let Some(real_dir) = initdb.parent() {
                    if has_both(real_dir) {
                        return Some(real_dir.to_path_buf());
                    }
                }
            }
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().unwrap_or(0);
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, bin)| bin)
}

/// Whether this process runs as root (`id -u` prints 0).
fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A currently free loopback TCP port (bind port 0, read it, release it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

/// Runs `command`, panicking with its output if it fails.
fn run_checked(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(output.status.success(), "{what}: {}", describe(&output));
}

/// Exit status plus standard output and error of a finished command.
fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

/// The last 40 lines of the server log (or why it could not be read).
fn log_tail(log: &Path) -> String {
    match fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        }
        Err(err) => format!("(could not read {}: {err})", log.display()),
    }
}

/// `path` single-quoted for `sh`.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// `url` taken apart ([`ConnectionUrl`]); the admin URL and `TEST_DATABASE_URL` must be URLs.
fn parse_url(url: &str) -> ConnectionUrl {
    ConnectionUrl::parse(url).unwrap_or_else(|err| panic!("{ENV_URL} or the admin URL: {err}"))
}

/// `url` with its database replaced by `database` (libpq's `dbname` set, everything else kept;
/// [`ConnectionUrl::to_url`]).
fn replace_url_path(url: &str, database: &str) -> String {
    parse_url(url).with("dbname", database).to_url()
}

/// The database `url` names, as libpq reads it (`postgres` when it names none: libpq would
/// default to the user name, and both our server and PostgreSQL have `postgres`).
fn db_name_of(url: &str) -> String {
    parse_url(url)
        .get("dbname")
        .unwrap_or("postgres")
        .to_string()
}

/// Host and port of the first host in `url`'s host list (`localhost` and 5432 when absent).
fn host_and_port(url: &str) -> (String, u16) {
    let url = parse_url(url);
    let first = |keyword| {
        let list = url.get(keyword).unwrap_or_default();
        Some(list.split(',').next()?.to_string()).filter(|first| !first.is_empty())
    };
    let port = first("port")
        .and_then(|port| port.parse().ok())
        .unwrap_or(5432);
    (
        first("host").unwrap_or_else(|| "localhost".to_string()),
        port,
    )
}
