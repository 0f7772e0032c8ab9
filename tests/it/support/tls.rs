//! A second throwaway PostgreSQL with TLS on and certificate authentication for `maxroach`,
//! and the certificates for it, made by the `openssl` command the way `cockroach cert` lays
//! them out: a CA, a node certificate for `localhost` / `127.0.0.1`, a client certificate with
//! CN=maxroach — and a second, unrelated CA for the "wrong CA" case.
//!
//! `pg_hba.conf` of that server: `maxroach` may connect only over TLS and only with a client
//! certificate the CA signed (`hostssl … cert`, `hostnossl … reject`); `postgres` (the admin)
//! over TLS without a password (`trust`); everyone else is rejected. `log_connections` is on,
//! so the log shows each session's user, database, application_name and TLS parameters.

use super::pg_server::{ServerSpec, TestServer};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The user the client certificate is for (the tutorial's).
pub const CLIENT_USER: &str = "maxroach";

/// The TLS server's `pg_hba.conf`.
const TLS_HBA: &str = "# written by tests/it/support/tls.rs\n\
     local     all all                      trust\n\
     hostssl   all maxroach 127.0.0.1/32    cert\n\
     hostssl   all maxroach ::1/128         cert\n\
     hostnossl all maxroach 0.0.0.0/0       reject\n\
     hostssl   all postgres 127.0.0.1/32    trust\n\
     hostssl   all postgres ::1/128         trust\n\
     host      all all      0.0.0.0/0       reject\n\
     host      all all      ::/0            reject\n";

/// The TLS server's extra `postgresql.conf` (files relative to the data directory).
const TLS_SETTINGS: &str = "ssl = on\n\
     ssl_cert_file = 'server.crt'\n\
     ssl_key_file = 'server.key'\n\
     ssl_ca_file = 'root.crt'\n\
     log_connections = on\n";

/// The PostgreSQL server with TLS, and the certificates it trusts.
pub struct TlsServer {
    /// The server (its `admin_url` connects as `postgres` over TLS without verifying it).
    pub server: TestServer,
    /// The certificates.
    pub certs: TestCerts,
}

/// The TLS server, started on first use (one per test binary; never `TEST_DATABASE_URL`,
/// which cannot be given TLS and certificate authentication from here).
pub fn tls_server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let certs = OnceLock::new();
        let prepare = |dir: &Path, data_dir: &Path| {
            let generated = TestCerts::generate(&dir.join("pki"));
            for (from, to, mode) in [
                (&generated.node_crt, "server.crt", 0o644),
                (&generated.node_key, "server.key", 0o600),
                (&generated.ca_crt, "root.crt", 0o644),
            ] {
                let target = data_dir.join(to);
                fs::copy(from, &target).expect("copy a server TLS file");
                TestServer::give_to_server(&target, mode);
            }
            let _ = certs.set(generated);
        };
        let server = TestServer::start_throwaway(&ServerSpec {
            hba: TLS_HBA,
            settings: TLS_SETTINGS,
            prepare: &prepare,
        });
        TlsServer {
            server,
            certs: certs.into_inner().expect("the certificates were generated"),
        }
    })
}

/// Certificates and keys for the TLS tests, all in one directory.
pub struct TestCerts {
    /// The CA's certificate (`ca.crt`).
    pub ca_crt: PathBuf,
    /// The CA's key (`ca.key`).
    pub ca_key: PathBuf,
    /// The server's certificate, for `localhost` and `127.0.0.1` (`node.crt`).
    pub node_crt: PathBuf,
    /// The server's key (`node.key`).
    pub node_key: PathBuf,
    /// The client certificate, CN=maxroach (`client.maxroach.crt`).
    pub client_crt: PathBuf,
    /// The client's key (`client.maxroach.key`).
    pub client_key: PathBuf,
    /// Another CA's certificate, which signed none of the above (`other-ca.crt`).
    pub other_ca_crt: PathBuf,
}

impl TestCerts {
    /// Generates every file in `dir` (created if needed) with `openssl`.
    pub fn generate(dir: &Path) -> TestCerts {
        fs::create_dir_all(dir).expect("create the certificate directory");
        let path = |name: &str| dir.join(name);
        let certs = TestCerts {
            ca_crt: path("ca.crt"),
            ca_key: path("ca.key"),
            node_crt: path("node.crt"),
            node_key: path("node.key"),
            client_crt: path("client.maxroach.crt"),
            client_key: path("client.maxroach.key"),
            other_ca_crt: path("other-ca.crt"),
        };
        self_signed_ca(&certs.ca_crt, &certs.ca_key, "roachbank test CA");
        self_signed_ca(&certs.other_ca_crt, &path("other-ca.key"), "some other CA");
        certs.sign(
            &certs.node_crt,
            &certs.node_key,
            "node",
            "basicConstraints = CA:FALSE\n\
             keyUsage = critical, digitalSignature, keyEncipherment\n\
             extendedKeyUsage = serverAuth, clientAuth\n\
             subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1\n",
        );
        certs.sign(
            &certs.client_crt,
            &certs.client_key,
            CLIENT_USER,
            "basicConstraints = CA:FALSE\n\
             keyUsage = critical, digitalSignature, keyEncipherment\n\
             extendedKeyUsage = clientAuth\n",
        );
        certs
    }

    /// A key and a certificate for `common_name`, signed by the CA, with `extensions`.
    fn sign(&self, crt: &Path, key: &Path, common_name: &str, extensions: &str) {
        let csr = crt.with_extension("csr");
        let ext = crt.with_extension("ext");
        fs::write(&ext, extensions).expect("write an extensions file");
        let (key_file, csr_file) = (arg(key), arg(&csr));
        let subject = format!("/CN={common_name}");
        let request = ["-keyout", &key_file, "-out", &csr_file, "-subj", &subject];
        openssl(&[&["req", "-new"][..], &NEW_EC_KEY, &request].concat());
        openssl(&[
            "x509",
            "-req",
            "-in",
            &arg(&csr),
            "-CA",
            &arg(&self.ca_crt),
            "-CAkey",
            &arg(&self.ca_key),
            "-set_serial",
            &serial(),
            "-days",
            "3",
            "-sha256",
            "-extfile",
            &arg(&ext),
            "-out",
            &arg(crt),
        ]);
        set_mode(key, 0o600);
    }

    /// Copies the client's files into `<dir>/certs/` as `cockroach cert` lays them out —
    /// `ca.crt`, `client.maxroach.crt`, `client.maxroach.key` (mode 0600) — and returns that
    /// directory.
    pub fn install_client_certs(&self, dir: &Path) -> PathBuf {
        let certs = dir.join("certs");
        fs::create_dir_all(&certs).expect("create certs/");
        for (from, to) in [
            (&self.ca_crt, "ca.crt"),
            (&self.client_crt, "client.maxroach.crt"),
            (&self.client_key, "client.maxroach.key"),
        ] {
            fs::copy(from, certs.join(to)).expect("copy a client TLS file");
        }
        set_mode(&certs.join("client.maxroach.key"), 0o600);
        certs
    }
}

/// `openssl req` arguments for a new, unencrypted P-256 key.
const NEW_EC_KEY: [&str; 5] = [
    "-nodes",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
];

/// A self-signed CA certificate and its key.
fn self_signed_ca(crt: &Path, key: &Path, common_name: &str) {
    let (key_file, crt_file, serial) = (arg(key), arg(crt), serial());
    let subject = format!("/CN={common_name}");
    let certificate = [
        "-keyout",
        &key_file,
        "-out",
        &crt_file,
        "-days",
        "3",
        "-sha256",
        "-set_serial",
        &serial,
        "-subj",
        &subject,
        "-addext",
        "basicConstraints = critical, CA:TRUE",
        "-addext",
        "keyUsage = critical, keyCertSign, cRLSign",
    ];
    openssl(&[&["req", "-x509", "-new"][..], &NEW_EC_KEY, &certificate].concat());
    set_mode(key, 0o600);
}

/// Sets `path`'s permission bits.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|err| panic!("chmod {}: {err}", path.display()));
}

fn arg(path: &Path) -> String {
    path.to_str().expect("UTF-8 path").to_string()
}

/// A random positive certificate serial number.
fn serial() -> String {
    (rand::random::<u64>() >> 1).max(1).to_string()
}

/// Runs `openssl ARGS`, panicking with its output if it fails.
fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (scripts/test installs it; Debian: apt-get install openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
