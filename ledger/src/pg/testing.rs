//! A throwaway PostgreSQL for tests: `REFLEDGER_TEST_PG_URL` when set, else a cluster of
//! its own, started once per test process in a temporary directory from the PostgreSQL
//! binaries found on the machine (`initdb`, `pg_ctl` on `PATH` or in
//! `/usr/lib/postgresql/*/bin`), listening on a unix socket only. When the process runs as
//! root (initdb refuses root), the cluster runs as the `postgres` user, else `nobody`,
//! through `runuser`. A watchdog process stops the cluster and deletes the directory once
//! the test process has exited. When nothing can be started, [`database`] says why and
//! the caller skips.
//!
//! Every call of [`database`] creates a fresh database, so tests do not see each other
//! (on a `REFLEDGER_TEST_PG_URL` server they stay behind, named `refledger_test_<uuid>`).
//! [`tls_database`] starts a second cluster that speaks TLS on a loopback port, with a
//! CA and a `localhost` certificate made by the `openssl` command.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use tokio_postgres::NoTls;
use uuid::Uuid;

/// The environment variable naming an existing server to test against (a role that may
/// `CREATE DATABASE`).
pub const TEST_PG_URL_VAR: &str = "REFLEDGER_TEST_PG_URL";

/// The server the tests of this process use.
struct Server {
    /// Connection string of its maintenance database, without `dbname`.
    base: String,
    /// `dbname=...` or the URL's own database, to connect for `CREATE DATABASE`.
    admin: String,
    url_form: bool,
}

/// A fresh, empty database: its connection string. `Err` says why none is available.
pub fn database() -> Result<String, String> {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    let server = SERVER.get_or_init(start).as_ref().map_err(Clone::clone)?;
    let name = create_database(server)?;
    Ok(if server.url_form {
        format!("{}/{name}", server.base.trim_end_matches('/'))
    } else {
        format!("{} dbname={name}", server.base)
    })
}

/// The environment variable that turns "no PostgreSQL, skipped" into a failure (CI).
pub const TEST_PG_REQUIRED_VAR: &str = "REFLEDGER_TEST_PG_REQUIRED";

/// A fresh database for a test, or `None` after printing why there is none; with
/// `REFLEDGER_TEST_PG_REQUIRED` set, having none panics instead of skipping.
pub fn database_or_skip() -> Option<String> {
    match database() {
        Ok(url) => Some(url),
        Err(why) if std::env::var_os(TEST_PG_REQUIRED_VAR).is_some() => {
            panic!("{TEST_PG_REQUIRED_VAR} is set but there is no PostgreSQL: {why}")
        }
        Err(why) => {
            println!("skipped: {why}");
            None
        }
    }
}

/// `connection` (a URL, or the `key=value` form [`database`] gives for the self-started
/// cluster) as a `postgresql://` URL, the form the binary's `--store` recognises.
pub fn as_url(connection: &str) -> Result<String, String> {
    if connection.starts_with("postgres://") || connection.starts_with("postgresql://") {
        return Ok(connection.to_owned());
    }
    let config: tokio_postgres::Config = connection.parse().map_err(|error| format!("{error}"))?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => {
            path.display().to_string().replace('/', "%2F")
        }
        None => return Err("the test connection names no host".to_owned()),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("refledger");
    let dbname = config
        .get_dbname()
        .ok_or("the test connection names no database")?;
    Ok(format!("postgresql://{user}@{host}:{port}/{dbname}"))
}

/// Creates a database with a new name on `server`; its name.
fn create_database(server: &Server) -> Result<String, String> {
    let name = format!("refledger_test_{}", Uuid::new_v4().simple());
    let admin = server.admin.clone();
    let statement = format!("CREATE DATABASE {name}");
    run_blocking(async move {
        let (client, connection) = admin
            .parse::<tokio_postgres::Config>()
            .map_err(|error| error.to_string())?
            .connect(NoTls)
            .await
            .map_err(|error| format!("cannot connect to the test server: {error}"))?;
        tokio::spawn(connection);
        client
            .batch_execute(&statement)
            .await
            .map_err(|error| format!("cannot create a test database: {error}"))
    })?;
    Ok(name)
}

/// A fresh database on a second test cluster that speaks TLS on 127.0.0.1 (certificate
/// for `localhost` from a CA made for it): the URL (`sslmode=require`) and the CA file.
/// Only the self-started cluster; `Err` with `REFLEDGER_TEST_PG_URL` too.
pub fn tls_database() -> Result<(String, PathBuf), String> {
    static SERVER: OnceLock<Result<(Server, PathBuf, String), String>> = OnceLock::new();
    let (server, ca_file, tls_base) = SERVER
        .get_or_init(|| {
            let started = std::time::Instant::now();
            let (server, tls) = start_cluster(true)?;
            let (ca_file, tls_base) = tls.expect("asked for TLS");
            eprintln!(
                "test PostgreSQL with TLS started in {:.1} s ({tls_base})",
                started.elapsed().as_secs_f64()
            );
            Ok((server, ca_file, tls_base))
        })
        .as_ref()
        .map_err(Clone::clone)?;
    let name = create_database(server)?;
    Ok((format!("{tls_base} dbname={name}"), ca_file.clone()))
}

/// Stops the test database server from taking connections for `database_url`'s
/// database, and ends the ones it has: an outage, as far as a vault can tell.
pub fn set_reachable(database_url: &str, reachable: bool) -> Result<(), String> {
    let config: tokio_postgres::Config =
        database_url.parse().map_err(|error| format!("{error}"))?;
    let name = config
        .get_dbname()
        .ok_or("the test database URL names no database")?
        .to_owned();
    let mut admin = config.clone();
    admin.dbname("postgres");
    run_blocking(async move {
        let (client, connection) = admin
            .connect(NoTls)
            .await
            .map_err(|error| format!("cannot connect to the test server: {error}"))?;
        tokio::spawn(connection);
        let statement = format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {reachable}");
        client
            .batch_execute(&statement)
            .await
            .map_err(|error| error.to_string())?;
        if !reachable {
            client
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&name],
                )
                .await
                .map_err(|error| error.to_string())?;
        }
        Ok(())
    })
}

/// Runs `sql` (statements without parameters) in `database_url`'s database.
pub fn execute(database_url: &str, sql: &str) -> Result<(), String> {
    let config: tokio_postgres::Config =
        database_url.parse().map_err(|error| format!("{error}"))?;
    let sql = sql.to_owned();
    run_blocking(async move {
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|error| format!("cannot connect to the test server: {error}"))?;
        tokio::spawn(connection);
        client
            .batch_execute(&sql)
            .await
            .map_err(|error| error.to_string())
    })
}

/// Ends every connection to `database_url`'s database, as a server restart would, but
/// keeps taking new ones.
pub fn end_connections(database_url: &str) -> Result<(), String> {
    set_reachable(database_url, false)?;
    set_reachable(database_url, true)
}

/// Runs `future` on a runtime of its own, on a thread of its own: callable from plain
/// and from async tests alike.
fn run_blocking<T: Send + 'static>(
    future: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| error.to_string())?
            .block_on(future)
    })
    .join()
    .map_err(|_| "the test database helper panicked".to_owned())?
}

fn start() -> Result<Server, String> {
    if let Ok(url) = std::env::var(TEST_PG_URL_VAR) {
        let url_form = url.starts_with("postgres://") || url.starts_with("postgresql://");
        return Ok(Server {
            admin: url.clone(),
            base: if url_form {
                // postgres://user@host:port/db?query: the databases replace `/db`.
                let (scheme, rest) = url.split_once("://").expect("checked above");
                let authority = rest.split(['/', '?']).next().unwrap_or(rest);
                format!("{scheme}://{authority}")
            } else {
                url.clone()
            },
            url_form,
        });
    }
    let started = std::time::Instant::now();
    let (server, _) = start_cluster(false)?;
    eprintln!(
        "test PostgreSQL started in {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        server.base
    );
    Ok(server)
}

/// Starts a cluster; with `tls`, also listening with TLS on a loopback port, and then the
/// CA file and the TLS connection string (without `dbname`).
fn start_cluster(tls: bool) -> Result<(Server, Option<(PathBuf, String)>), String> {
    let bin = find_binaries().ok_or(
        "no PostgreSQL binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin; \
         set REFLEDGER_TEST_PG_URL to test against a running server",
    )?;
    let root = running_as_root();
    // As root the cluster runs as another user, who must reach the directory: /tmp, not
    // a TMPDIR that may sit in root's home. /tmp also keeps the socket path short.
    let parent = if root {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    };
    let dir = parent.join(format!("refledger-pg-{}", Uuid::new_v4().simple()));
    std::fs::create_dir(&dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    let runner = Runner::for_this_process(&dir, root)?;
    // From here on the watchdog owns the directory: it stops whatever was started and
    // deletes it when this process exits, also after a failure below.
    spawn_watchdog(&bin, &dir, &runner)?;
    let data = dir.join("data");
    runner.run(
        &bin.join("initdb"),
        [
            OsStr::new("-D"),
            data.as_os_str(),
            OsStr::new("-U"),
            OsStr::new("refledger"),
            OsStr::new("-A"),
            OsStr::new("trust"),
            OsStr::new("-E"),
            OsStr::new("UTF8"),
            OsStr::new("--no-locale"),
            OsStr::new("--no-sync"),
        ],
    )?;
    // A unix socket in the directory only: no port to collide with. fsync off: the
    // cluster is thrown away, and the machine is shared.
    let mut options = format!(
        "-k {} -c listen_addresses='' -c fsync=off -c max_connections=200",
        dir.display()
    );
    let mut port = 5432;
    if tls {
        make_certificates(&runner, &dir)?;
        port = free_port()?;
        options = format!(
            "-k {dir} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off -c ssl=on \
             -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key",
            dir = dir.display()
        );
    }
    runner.run(
        &bin.join("pg_ctl"),
        [
            OsStr::new("-D"),
            data.as_os_str(),
            OsStr::new("-w"),
            OsStr::new("-t"),
            OsStr::new("60"),
            OsStr::new("-l"),
            dir.join("server.log").as_os_str(),
            OsStr::new("-o"),
            OsStr::new(&options),
            OsStr::new("start"),
        ],
    )?;
    let base = format!("host={} port={port} user=refledger", dir.display());
    let server = Server {
        admin: format!("{base} dbname=postgres"),
        base,
        url_form: false,
    };
    let tls = tls.then(|| {
        (
            dir.join("ca.crt"),
            format!("host=localhost port={port} user=refledger sslmode=require"),
        )
    });
    Ok((server, tls))
}

/// A CA and a certificate for `localhost` signed by it, made with the `openssl` command,
/// as the cluster's user (the server key must be its own).
fn make_certificates(runner: &Runner, dir: &Path) -> Result<(), String> {
    let openssl = Path::new("openssl");
    let path = |name: &str| dir.join(name).into_os_string();
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|error| format!("cannot write the certificate extensions: {error}"))?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (ca_key, ca_crt) = (path("ca.key"), path("ca.crt"));
    let (server_key, server_csr, server_crt) =
        (path("server.key"), path("server.csr"), path("server.crt"));
    let ext = path("san.ext");
    let mut args: Vec<&OsStr> = vec!["req".as_ref(), "-x509".as_ref()];
    args.extend(ec.iter().map(OsStr::new));
    args.extend([
        OsStr::new("-keyout"),
        &ca_key,
        OsStr::new("-out"),
        &ca_crt,
        OsStr::new("-days"),
        OsStr::new("2"),
        OsStr::new("-subj"),
        OsStr::new("/CN=refledger test CA"),
    ]);
    runner.run(openssl, args)?;
    let mut args: Vec<&OsStr> = vec!["req".as_ref(), "-new".as_ref()];
    args.extend(ec.iter().map(OsStr::new));
    args.extend([
        OsStr::new("-keyout"),
        &server_key,
        OsStr::new("-out"),
        &server_csr,
        OsStr::new("-subj"),
        OsStr::new("/CN=localhost"),
    ]);
    runner.run(openssl, args)?;
    runner.run(
        openssl,
        [
            OsStr::new("x509"),
            OsStr::new("-req"),
            OsStr::new("-in"),
            &server_csr,
            OsStr::new("-CA"),
            &ca_crt,
            OsStr::new("-CAkey"),
            &ca_key,
            OsStr::new("-CAcreateserial"),
            OsStr::new("-out"),
            &server_crt,
            OsStr::new("-days"),
            OsStr::new("2"),
            OsStr::new("-extfile"),
            &ext,
        ],
    )
}

/// A loopback port nothing listens on (now).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("cannot find a free port: {error}"))
}

fn find_binaries() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|dir| has_both(dir)) {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|dir| has_both(dir))
        .collect();
    versions.sort();
    versions.pop()
}

/// How the cluster's commands run: directly, or as an unprivileged user when we are root.
struct Runner {
    user: Option<String>,
}

impl Runner {
    fn for_this_process(dir: &Path, root: bool) -> Result<Runner, String> {
        if !root {
            return Ok(Runner { user: None });
        }
        let (user, uid, gid) = ["postgres", "nobody"]
            .into_iter()
            .find_map(|user| Some((user, id(user, "-u")?, id(user, "-g")?)))
            .ok_or("running as root, and neither a postgres nor a nobody user exists")?;
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .map_err(|error| format!("cannot hand {} to {user}: {error}", dir.display()))?;
        Ok(Runner {
            user: Some(user.to_owned()),
        })
    }

    fn command(&self, program: &Path) -> Command {
        match &self.user {
            None => Command::new(program),
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
        }
    }

    fn run<'a>(
        &self,
        program: &Path,
        args: impl IntoIterator<Item = &'a OsStr>,
    ) -> Result<(), String> {
        let output = self
            .command(program)
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("cannot run {}: {error}", program.display()))?;
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "{} failed ({}): {}{}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective user).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|meta| meta.uid() == 0)
        .unwrap_or(false)
}

fn id(user: &str, flag: &str) -> Option<u32> {
    let output = Command::new("id").args([flag, user]).output().ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// A detached shell that waits for this process to end, then stops the cluster and
/// deletes its directory.
fn spawn_watchdog(bin: &Path, dir: &Path, runner: &Runner) -> Result<(), String> {
    let quote = |path: &Path| format!("'{}'", path.display().to_string().replace('\'', "'\\''"));
    let as_user = match &runner.user {
        Some(user) => format!("runuser -u {user} -- "),
        None => String::new(),
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         if [ -f {data}/postmaster.pid ]; then {as_user}{pg_ctl} -D {data} -m immediate -w stop; fi; \
         rm -rf {dir}",
        pid = std::process::id(),
        data = quote(&dir.join("data")),
        pg_ctl = quote(&bin.join("pg_ctl")),
        dir = quote(dir),
    );
    Command::new("setsid")
        .args(["sh", "-c", &script])
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|error| format!("cannot start the cleanup watchdog: {error}"))
}

/// How many rows `table` holds for `subject`'s `group` (`table` is one of the vault's).
pub fn rows_of(database_url: &str, table: &str, subject: Uuid, group: &str) -> Result<i64, String> {
    let config: tokio_postgres::Config =
        database_url.parse().map_err(|error| format!("{error}"))?;
    let statement =
        format!("SELECT count(*) FROM {table} WHERE subject_id = $1 AND erasure_group = $2");
    let group = group.to_owned();
    run_blocking(async move {
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|error| format!("cannot connect to the test server: {error}"))?;
        tokio::spawn(connection);
        let row = client
            .query_one(&statement, &[&subject, &group])
            .await
            .map_err(|error| error.to_string())?;
        Ok(row.get(0))
    })
}
