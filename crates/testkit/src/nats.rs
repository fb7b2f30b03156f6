//! NATS for tests: a private nats-server (JetStream on, file storage in a
//! temp directory, a free port) for tests that stop and restart NATS, and a
//! namespace of the test's own on the stack's shared server for the rest.
//! Both leave nothing behind.
//!
//! Both run with authorization, as production does: a private server gets
//! the configuration `gatehouse nats-config` generates (for every namespace,
//! or for one: [`NatsServer::start_with`]) with fresh passwords, and the
//! stack's server has its own (`.stack/env`). A test reaches either through
//! a [`NatsAccess`] and connects as the process it plays: a gateway as
//! [`Process::Gateway`], a worker as [`Process::Worker`], setup and
//! inspection as [`Process::Admin`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bus::authorization::{Authorization, Scope};
use bus::{Auth, Namespace, NatsSettings, Process};

/// How to reach NATS (one server, or every node of a cluster) and log in
/// as each process.
#[derive(Clone)]
pub struct NatsAccess {
    url: String,
    /// `None`: a server that takes anyone (a stack started before NATS had
    /// users); every process then connects without credentials.
    logins: Option<Arc<BTreeMap<Process, Login>>>,
}

struct Login {
    user: String,
    password: String,
}

impl fmt::Debug for NatsAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsAccess")
            .field("url", &self.url)
            .field("authorized", &self.logins.is_some())
            .finish()
    }
}

impl NatsAccess {
    /// `url` with a user and password per process.
    pub fn new(url: impl Into<String>, logins: BTreeMap<Process, (String, String)>) -> Self {
        NatsAccess {
            url: url.into(),
            logins: Some(Arc::new(
                logins
                    .into_iter()
                    .map(|(p, (user, password))| (p, Login { user, password }))
                    .collect(),
            )),
        }
    }

    /// `url`, connecting without credentials.
    pub fn anonymous(url: impl Into<String>) -> Self {
        NatsAccess {
            url: url.into(),
            logins: None,
        }
    }

    /// The server's URL (a cluster's: every node's, comma-separated),
    /// without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the server has users (and refuses anonymous connections).
    pub fn is_authorized(&self) -> bool {
        self.logins.is_some()
    }

    fn login(&self, process: Process) -> Option<&Login> {
        let logins = self.logins.as_ref()?;
        Some(
            logins
                .get(&process)
                .unwrap_or_else(|| panic!("no NATS login for the {process} user")),
        )
    }

    /// The settings `process` connects with.
    pub fn settings(&self, process: Process) -> NatsSettings {
        NatsSettings {
            auth: self.login(process).map(|l| Auth::UserPassword {
                user: l.user.clone(),
                password: bus::Secret::new(l.password.clone()),
            }),
            ..NatsSettings::new(self.url.clone())
        }
    }

    /// Connects as `process`; panics naming the server when it cannot.
    pub async fn connect(&self, process: Process) -> async_nats::Client {
        self.settings(process)
            .connect(process)
            .await
            .unwrap_or_else(|e| panic!("connecting to NATS as {process}: {e}"))
    }

    /// JetStream as `process`.
    pub async fn jetstream(&self, process: Process) -> jetstream::Context {
        jetstream::new(self.connect(process).await)
    }

    /// The environment a child `gatehouse` process needs to connect as
    /// `process`: NATS_URL, and NATS_USER and NATS_PASSWORD when the server
    /// has users.
    pub fn env(&self, process: Process) -> Vec<(&'static str, String)> {
        let mut env = vec![("NATS_URL", self.url.clone())];
        if let Some(login) = self.login(process) {
            env.push(("NATS_USER", login.user.clone()));
            env.push(("NATS_PASSWORD", login.password.clone()));
        }
        env
    }
}

/// A nats-server child process; killed on drop.
pub struct NatsServer {
    node: Node,
    passwords: Passwords,
}

/// Each process's password, as the servers' environment hands it to the
/// generated authorization.
pub(crate) type Passwords = BTreeMap<Process, String>;

fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return bin.into();
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free ports: each listener is held until all are chosen, or
/// the system could hand the same port out twice.
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound port").port())
        .collect()
}

const CONFIG: &str = "nats.conf";
const AUTHORIZATION: &str = "authorization.conf";
const LOG: &str = "nats.log";
const STDERR: &str = "nats.stderr";

/// A fresh random password per process.
pub(crate) fn fresh_passwords() -> Passwords {
    // nats-server reads a variable's value as a configuration value:
    // one that starts with a digit would be taken for a number.
    Process::ALL
        .into_iter()
        .map(|p| (p, format!("p{:032x}", rand::random::<u128>())))
        .collect()
}

/// `url` (one server or a comma-separated list) with every process's login.
pub(crate) fn access_with(url: String, passwords: &Passwords) -> NatsAccess {
    NatsAccess::new(
        url,
        passwords
            .iter()
            .map(|(p, pw)| (*p, (p.name().to_owned(), pw.clone())))
            .collect(),
    )
}

/// One nats-server in a directory of its own (configuration, store, log),
/// on a port of its own, with the users and permissions `gatehouse
/// nats-config` generates. A restart finds its port and store again.
pub(crate) struct Node {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Node {
    /// A node not yet started, to listen for clients on `port`; `config`
    /// is the rest of its configuration (server name, cluster), written
    /// above the included authorization.
    pub(crate) fn new(port: u16, authorization: &Authorization, config: &str) -> Node {
        let dir = tempfile::tempdir().expect("temp dir for JetStream");
        std::fs::write(
            dir.path().join(CONFIG),
            format!("{config}include ./{AUTHORIZATION}\n"),
        )
        .expect("writing the server's configuration");
        std::fs::write(
            dir.path().join(AUTHORIZATION),
            bus::authorization::render(authorization),
        )
        .expect("writing the server's authorization");
        Node {
            port,
            dir,
            child: None,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub(crate) fn log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        read(STDERR) + &read(LOG)
    }

    /// Starts the server and waits until it accepts connections.
    pub(crate) fn start(&mut self, passwords: &Passwords) {
        assert!(self.child.is_none(), "already running");
        let bin = binary();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(self.dir.path().join(CONFIG))
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.dir.path())
            .arg("-l")
            .arg(self.dir.path().join(LOG))
            // The generated configuration reads each password from here.
            .envs(
                passwords
                    .iter()
                    .map(|(p, pw)| (p.password_variable(), pw.as_str())),
            )
            .stdout(Stdio::null())
            // A configuration error is printed before the log file opens.
            .stderr(
                std::fs::File::create(self.dir.path().join(STDERR))
                    .map_or_else(|_| Stdio::null(), Stdio::from),
            )
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); install nats-server (Debian package nats-server) or set NATS_SERVER_BIN",
                    bin.display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("nats-server exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (abruptly, as a crash would).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

impl NatsServer {
    /// A server with the users and permissions of the local stack: every
    /// namespace ([`Scope::Any`]).
    pub fn start() -> Self {
        Self::start_with(&Authorization::new(Scope::Any))
    }

    /// A server with the users and permissions `authorization` generates,
    /// each user with a fresh random password.
    pub fn start_with(authorization: &Authorization) -> Self {
        let mut server = Self {
            node: Node::new(free_port(), authorization, "# A private test server.\n"),
            passwords: fresh_passwords(),
        };
        server.resume();
        server
    }

    /// The URL, without credentials.
    pub fn url(&self) -> String {
        self.node.url()
    }

    /// The URL and every process's login.
    pub fn access(&self) -> NatsAccess {
        access_with(self.url(), &self.passwords)
    }

    /// What the server has logged so far (permission violations among it).
    pub fn log(&self) -> String {
        self.node.log()
    }

    /// Starts the server again on the same port and store directory.
    pub fn resume(&mut self) {
        self.node.start(&self.passwords);
    }

    /// Kills the server (abruptly, as a crash would).
    pub fn stop(&mut self) {
        self.node.kill();
    }
}

/// A namespace of its own on a shared NATS server, so parallel tests cannot
/// see each other's streams. Every stream whose name carries the namespace
/// (the contract streams and the key-value buckets a gateway makes) is
/// deleted when the value is dropped.
pub struct NatsScope {
    /// The server, to connect as another process.
    pub access: NatsAccess,
    /// JetStream as the admin user: setup, inspection and cleanup.
    pub js: jetstream::Context,
    /// JetStream as the gateway: publishing events as the gateway does.
    pub gateway: jetstream::Context,
    pub ns: Namespace,
}

impl NatsScope {
    /// A fresh namespace on the server `access` reaches.
    pub async fn new(access: &NatsAccess) -> NatsScope {
        let ns = Namespace::prefixed(&format!("t{:016x}", rand::random::<u64>()))
            .expect("a valid namespace");
        NatsScope {
            access: access.clone(),
            js: access.jetstream(Process::Admin).await,
            gateway: access.jetstream(Process::Gateway).await,
            ns,
        }
    }

    /// JetStream as `process` (a connection of its own).
    pub async fn jetstream(&self, process: Process) -> jetstream::Context {
        self.access.jetstream(process).await
    }

    /// Publishes as the gateway does: as the gateway user, with the
    /// envelope id as `Nats-Msg-Id`.
    pub async fn publish(&self, envelope: &wire::Envelope) {
        self.publish_with_msg_id(envelope, envelope.id.as_str())
            .await;
    }

    /// Publishes `envelope` under another message id, which gets a copy
    /// past JetStream's dedupe window (as a late redelivery would).
    pub async fn publish_with_msg_id(&self, envelope: &wire::Envelope, msg_id: &str) {
        publish_with_msg_id(&self.gateway, &self.ns, envelope, msg_id).await;
    }

    /// Waits until every durable consumer on this namespace's streams has
    /// handled everything; see [`drained`](crate::drained()).
    pub async fn drained(&self, within: Duration) {
        crate::drained(&self.js, &self.ns, within).await;
    }
}

/// Publishes `envelope` on its subject in `ns` with `msg_id` as
/// `Nats-Msg-Id`, and awaits JetStream's acknowledgement.
pub async fn publish_with_msg_id(
    js: &jetstream::Context,
    ns: &Namespace,
    envelope: &wire::Envelope,
    msg_id: &str,
) {
    let subject = ns.subject(envelope.subject().expect("an envelope of a known type"));
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(wire::subjects::headers::MSG_ID, msg_id);
    let body = envelope.to_json().expect("an envelope serialises");
    js.publish_with_headers(subject.clone(), headers, body.into())
        .await
        .unwrap_or_else(|e| panic!("publishing to {subject}: {e}"))
        .await
        .unwrap_or_else(|e| panic!("JetStream did not acknowledge {subject}: {e}"));
}

impl Drop for NatsScope {
    fn drop(&mut self) {
        let js = self.js.clone();
        let Some(prefix) = self.ns.prefix().map(str::to_owned) else {
            return;
        };
        crate::block_on_aside(async move {
            use futures::StreamExt;
            let names: Vec<String> = js
                .stream_names()
                .filter_map(|name| async move { name.ok() })
                .filter(|name| std::future::ready(name.contains(&prefix)))
                .collect()
                .await;
            for name in names {
                let _ = js.delete_stream(&name).await;
            }
        });
    }
}

/// One message read back from a stream.
#[derive(Debug)]
pub struct Stored {
    pub subject: String,
    pub msg_id: Option<String>,
    /// The W3C trace context header, if the publisher set one.
    pub traceparent: Option<String>,
    pub envelope: wire::Envelope,
}

/// Every message of `stream`, in stream order (read as the admin user).
pub async fn read_stream(nats: &NatsAccess, stream: &str) -> Vec<Stored> {
    let js = nats.jetstream(Process::Admin).await;
    let Ok(mut handle) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let state = handle.info().await.expect("stream info").state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        let Ok(message) = handle.get_raw_message(seq).await else {
            continue;
        };
        let msg_id = message
            .headers
            .get(wire::subjects::headers::MSG_ID)
            .map(|v| v.as_str().to_owned());
        let traceparent = message
            .headers
            .get(wire::trace::HEADER)
            .map(|v| v.as_str().to_owned());
        out.push(Stored {
            subject: message.subject.to_string(),
            msg_id,
            traceparent,
            envelope: wire::Envelope::from_json(&message.payload).expect("an envelope"),
        });
    }
    out
}

/// The number of messages in `stream` (0 if it does not exist or NATS is
/// down: callers poll it until it is what they expect).
pub async fn stream_len(nats: &NatsAccess, stream: &str) -> u64 {
    let Ok(client) = nats.settings(Process::Admin).connect(Process::Admin).await else {
        return 0;
    };
    let js = jetstream::new(client);
    match js.get_stream(stream).await {
        Ok(mut handle) => handle.info().await.map_or(0, |i| i.state.messages),
        Err(_) => 0,
    }
}
