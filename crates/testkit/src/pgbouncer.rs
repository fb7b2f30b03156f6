//! A private PgBouncer for tests that kill and restart it: the deployed
//! configuration (`deploy/pgbouncer/pgbouncer.ini`, rendered as
//! `scripts/stack` renders it: transaction pooling, SCRAM for
//! `gatehouse_app` through an auth file, every database on one PostgreSQL)
//! in a temp dir of its own, on a free port. The stack's PgBouncer is shared
//! by every test running; this one can crash without anyone else noticing.
//!
//! It runs in the foreground as a child of the test, so [`PgBouncer::kill`]
//! is a SIGKILL of PgBouncer itself, as a crash would be.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::service_user::{as_service, hand_over, service_user, ServiceUser};
use crate::{workspace_root, StackEnv, TestDb};

const CONFIG: &str = "pgbouncer.ini";
const USERLIST: &str = "userlist.txt";
const LOG: &str = "pgbouncer.log";
const STDERR: &str = "pgbouncer.stderr";

/// A PgBouncer child process; killed when the value is dropped.
pub struct PgBouncer {
    port: u16,
    dir: tempfile::TempDir,
    user: Option<ServiceUser>,
    child: Option<Child>,
}

impl PgBouncer {
    /// In front of the stack's PostgreSQL, for the databases [`TestDb`]
    /// creates there.
    pub async fn start() -> PgBouncer {
        let env = StackEnv::load();
        Self::start_for(env.pg_port, &env.app_password).await
    }

    /// In front of the PostgreSQL on 127.0.0.1:`pg_port`, letting
    /// `gatehouse_app` in with `app_password` (which PgBouncer also logs in
    /// to PostgreSQL with). Returns once it accepts connections.
    pub async fn start_for(pg_port: u16, app_password: &str) -> PgBouncer {
        Self::start_with(pg_port, app_password, &[]).await
    }

    /// [`start_for`](Self::start_for) with `settings` of the `[pgbouncer]`
    /// section changed from the deployed ones (added where the file has
    /// none): for a test that needs PgBouncer to behave otherwise, saying
    /// why.
    pub async fn start_with(
        pg_port: u16,
        app_password: &str,
        settings: &[(&str, &str)],
    ) -> PgBouncer {
        let binary = binary();
        assert!(
            std::path::Path::new(&binary).exists(),
            "{binary} does not exist: install PgBouncer (Debian package pgbouncer) or set PGBOUNCER_BIN"
        );
        let template =
            std::fs::read_to_string(workspace_root().join("deploy/pgbouncer").join(CONFIG))
                .expect("reading deploy/pgbouncer/pgbouncer.ini");
        let dir = tempfile::tempdir().expect("a temp dir for PgBouncer");
        let port = crate::nats::free_ports(1)[0];
        let rendered = with_settings(
            &template
                .replace("@DIR@", &dir.path().display().to_string())
                .replace("@PORT@", &port.to_string())
                .replace("@PG_PORT@", &pg_port.to_string()),
            settings,
        );
        std::fs::write(dir.path().join(CONFIG), rendered).expect("writing pgbouncer.ini");
        // Readable by PgBouncer's user alone, as scripts/stack leaves it.
        write_private(
            &dir.path().join(USERLIST),
            &format!("\"gatehouse_app\" \"{app_password}\"\n"),
        );
        let user = service_user();
        for name in ["", CONFIG, USERLIST] {
            hand_over(&dir.path().join(name), user);
        }
        let mut bouncer = PgBouncer {
            port,
            dir,
            user,
            child: None,
        };
        bouncer.restart().await;
        bouncer
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `gatehouse_app`'s URL for `db` through this PgBouncer.
    pub fn url_for(&self, db: &TestDb) -> String {
        format!(
            "postgresql://gatehouse_app:{}@127.0.0.1:{}/{}",
            db.env.app_password, self.port, db.name
        )
    }

    /// A store (pool) for `db` through this PgBouncer, as a worker's.
    pub async fn store(&self, db: &TestDb, pool_size: usize) -> store::Store {
        let config = store::StoreConfig::from_url(&self.url_for(db))
            .and_then(|c| c.with_pool_size(pool_size))
            .unwrap_or_else(|e| panic!("store config: {e}"));
        store::Store::connect(config)
            .await
            .unwrap_or_else(|e| panic!("connecting a store through PgBouncer: {e}\n{}", self.log()))
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// What PgBouncer has logged so far, for failure messages.
    pub fn log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        read(STDERR) + &read(LOG)
    }

    /// Kills PgBouncer with SIGKILL: no goodbye to clients or servers, as a
    /// crash. Its clients' connections break mid-transaction.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts PgBouncer (again) on its port with its configuration; returns
    /// once it accepts connections. PgBouncer removes the pidfile a killed
    /// one left, as the process it names is gone.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "PgBouncer is already running");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(STDERR))
            .map_or_else(|_| Stdio::null(), Stdio::from);
        let mut command = Command::new(binary());
        let child = as_service(&mut command, self.user)
            .arg(self.dir.path().join(CONFIG))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Dropping the value (a test that failed) ends PgBouncer too.
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary()));
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                panic!("PgBouncer exited ({status}): {}", self.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "PgBouncer did not listen on {} within 10s: {}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn binary() -> String {
    std::env::var("PGBOUNCER_BIN").unwrap_or_else(|_| "/usr/sbin/pgbouncer".into())
}

/// `ini` with each of `settings` set in its `[pgbouncer]` section: an
/// existing line replaced, a missing one added after the section header.
fn with_settings(ini: &str, settings: &[(&str, &str)]) -> String {
    let mut lines: Vec<String> = ini.lines().map(str::to_owned).collect();
    for (key, value) in settings {
        let line = format!("{key} = {value}");
        let existing = lines.iter().position(|l| {
            l.split_once('=')
                .is_some_and(|(k, _)| k.trim() == *key && !l.trim_start().starts_with(';'))
        });
        match existing {
            Some(i) => lines[i] = line,
            None => {
                let section = lines
                    .iter()
                    .position(|l| l.trim() == "[pgbouncer]")
                    .expect("pgbouncer.ini has a [pgbouncer] section");
                lines.insert(section + 1, line);
            }
        }
    }
    lines.join("\n") + "\n"
}

fn write_private(path: &std::path::Path, contents: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    file.write_all(contents.as_bytes())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
