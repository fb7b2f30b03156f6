//! A private PostgreSQL cluster for tests that stop and restart PostgreSQL:
//! the stack's server is shared by every test running, this one can go down
//! without anyone else noticing. Set up as `scripts/stack` sets up the
//! shared one: `initdb` with trust on loopback, the roles bootstrapped by
//! `deploy/postgres/bootstrap.sql` through `psql` (fresh passwords), and
//! each [`TestDb`] on it migrated by `store::migrate`.
//!
//! Uses the newest server binaries under /usr/lib/postgresql (Debian's
//! layout), or those in `GATEHOUSE_PG_BIN`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::service_user::{as_service, hand_over, service_user, ServiceUser};
use crate::{workspace_root, StackEnv, TestDb};

const DATA: &str = "data";
const LOG: &str = "postgres.log";
const INITDB_LOG: &str = "initdb.log";

/// How `pg_ctl` stops the server (its `-m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Sessions are ended (`57P01 terminating connection due to
    /// administrator command`), in-flight transactions rolled back, and a
    /// checkpoint written before the server exits.
    Fast,
    /// The server exits at once, as in a crash: the next start replays the
    /// WAL.
    Immediate,
}

impl StopMode {
    fn arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A PostgreSQL cluster in a temp dir of its own, on a free port; stopped
/// (immediately) and deleted when the value is dropped.
pub struct PgCluster {
    port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    user: Option<ServiceUser>,
    env: StackEnv,
}

impl PgCluster {
    /// Initialises, starts and bootstraps a cluster: on return its roles
    /// exist and it accepts connections.
    pub async fn start() -> PgCluster {
        let bin = pg_bin();
        let dir = tempfile::tempdir().expect("a temp dir for PostgreSQL");
        let user = service_user();
        hand_over(dir.path(), user);
        let port = crate::nats::free_ports(1)[0];
        let stack = StackEnv::load();
        let env = StackEnv {
            admin_url: format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
            owner_password: fresh_password(),
            app_password: fresh_password(),
            pg_port: port,
            // None in front of this cluster unless a test starts one
            // (`PgBouncer::start_for`); port 0 refuses every connection, so
            // a URL that assumed the stack's fails at once.
            pgbouncer_port: 0,
            nats: stack.nats,
        };
        let cluster = PgCluster {
            port,
            bin,
            dir,
            user,
            env,
        };
        // No fsync while initialising: the cluster is thrown away with the
        // test, and syncing every file would take seconds of a busy disk.
        let initdb_log = std::fs::File::create(cluster.dir.path().join(INITDB_LOG))
            .expect("creating initdb.log");
        cluster
            .run(
                cluster
                    .tool("initdb")
                    .arg("-D")
                    .arg(cluster.data())
                    .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
                    .args(["--locale=C.UTF-8", "--no-sync"])
                    .stdout(Stdio::from(
                        initdb_log.try_clone().expect("initdb.log handle"),
                    ))
                    .stderr(Stdio::from(initdb_log)),
                "initdb",
            )
            .await;
        cluster.start_server().await;
        cluster.bootstrap().await;
        cluster
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How to reach this cluster, shaped as the stack's environment: a
    /// superuser URL and the Gatehouse roles' passwords.
    pub fn env(&self) -> &StackEnv {
        &self.env
    }

    /// A fresh database on this cluster, owned by `gatehouse_owner` and
    /// migrated; dropped with the value (while the cluster runs).
    pub async fn create_db(&self, label: &str) -> TestDb {
        TestDb::create_on(self.env.clone(), label).await
    }

    /// `pg_ctl restart -m <mode>`: returns once the server accepts
    /// connections again.
    pub async fn restart(&self, mode: StopMode) {
        self.pg_ctl(&["-m", mode.arg(), "restart"], true).await;
    }

    /// `pg_ctl stop -m <mode>`: returns once the server is gone.
    pub async fn stop(&self, mode: StopMode) {
        self.pg_ctl(&["-m", mode.arg(), "stop"], false).await;
    }

    /// Starts the server (after [`stop`](Self::stop)); returns once it
    /// accepts connections (after a crash: once it has replayed the WAL).
    pub async fn start_server(&self) {
        self.pg_ctl(&["start"], true).await;
    }

    /// `pg_ctl -D <data> -w -t 60 <args>`, waiting for it to finish; with
    /// the server's options and log file when it `starts` a server.
    async fn pg_ctl(&self, args: &[&str], starts: bool) {
        let mut command = self.tool("pg_ctl");
        command
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "60"])
            .args(args);
        if starts {
            command
                .arg("-o")
                .arg(self.server_options())
                .arg("-l")
                .arg(self.dir.path().join(LOG));
        }
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let what = format!("pg_ctl {}", args.last().copied().unwrap_or_default());
        self.run(&mut command, &what).await;
    }

    /// What the server (and initdb) logged, for failure messages.
    pub fn log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        read(INITDB_LOG) + &read(LOG)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join(DATA)
    }

    /// Loopback only, and the Unix socket in the temp dir rather than the
    /// system's (which the stack's server may own).
    fn server_options(&self) -> String {
        format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {}",
            self.port,
            self.dir.path().display()
        )
    }

    fn tool(&self, name: &str) -> Command {
        let mut command = Command::new(self.bin.join(name));
        as_service(&mut command, self.user)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    async fn run(&self, command: &mut Command, what: &str) {
        let status = command
            .status()
            .await
            .unwrap_or_else(|e| panic!("running {what}: {e}"));
        assert!(
            status.success(),
            "{what} failed ({status}):\n{}",
            self.log()
        );
    }

    /// The roles, as `scripts/stack` creates them on the shared server.
    async fn bootstrap(&self) {
        let sql = workspace_root().join("deploy/postgres/bootstrap.sql");
        let out = Command::new("psql")
            .arg(&self.env.admin_url)
            .args(["-XqA", "-v", "ON_ERROR_STOP=1"])
            .arg("-v")
            .arg(format!("owner_password={}", self.env.owner_password))
            .arg("-v")
            .arg(format!("app_password={}", self.env.app_password))
            .args(["-v", "database=gatehouse", "-f"])
            .arg(&sql)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|e| panic!("running psql (Debian package postgresql-client): {e}"));
        assert!(
            out.status.success(),
            "bootstrapping the roles with {} failed: {}",
            sql.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(self.bin.join("pg_ctl"));
        if let Some(user) = self.user {
            command.uid(user.uid).gid(user.gid);
        }
        // Immediate: nothing of it is kept, so nothing needs a checkpoint.
        let _ = command
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-m", "immediate", "stop"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `GATEHOUSE_PG_BIN`, or the newest /usr/lib/postgresql/<version>/bin.
fn pg_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("GATEHOUSE_PG_BIN") {
        return bin.into();
    }
    let root = Path::new("/usr/lib/postgresql");
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map_or_else(
            || panic!("no PostgreSQL server binaries under {}: install the Debian package postgresql or set GATEHOUSE_PG_BIN", root.display()),
            |(_, bin)| bin,
        )
}

fn fresh_password() -> String {
    format!("p{:032x}", rand::random::<u128>())
}
