//! NATS for tests: a private nats-server (JetStream on, file storage in a
//! temp directory, a free port) for tests that stop and restart NATS, and a
//! namespace of the test's own on the stack's shared server for the rest.
//! Both leave nothing behind.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bus::Namespace;

/// A nats-server child process; killed on drop.
pub struct NatsServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

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
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl NatsServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for JetStream");
        let mut server = Self {
            port: free_port(),
            dir,
            child: None,
        };
        server.resume();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port and store directory.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let bin = binary();
        let child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (abruptly, as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// JetStream on `url`; panics naming the server when it cannot connect.
pub async fn jetstream(url: &str) -> jetstream::Context {
    let client = async_nats::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to NATS at {url}: {e}"));
    jetstream::new(client)
}

/// A namespace of its own on a shared NATS server, so parallel tests cannot
/// see each other's streams. Every stream whose name carries the namespace
/// (the contract streams and the key-value buckets a gateway makes) is
/// deleted when the value is dropped.
pub struct NatsScope {
    pub js: jetstream::Context,
    pub ns: Namespace,
}

impl NatsScope {
    /// A fresh namespace on the server at `url`.
    pub async fn new(url: &str) -> NatsScope {
        let ns = Namespace::prefixed(&format!("t{:016x}", rand::random::<u64>()))
            .expect("a valid namespace");
        NatsScope {
            js: jetstream(url).await,
            ns,
        }
    }

    /// Publishes as the gateway does: the envelope id as `Nats-Msg-Id`.
    pub async fn publish(&self, envelope: &wire::Envelope) {
        self.publish_with_msg_id(envelope, envelope.id.as_str())
            .await;
    }

    /// Publishes `envelope` under another message id, which gets a copy
    /// past JetStream's dedupe window (as a late redelivery would).
    pub async fn publish_with_msg_id(&self, envelope: &wire::Envelope, msg_id: &str) {
        publish_with_msg_id(&self.js, &self.ns, envelope, msg_id).await;
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
    pub envelope: wire::Envelope,
}

/// Every message of `stream`, in stream order.
pub async fn read_stream(url: &str, stream: &str) -> Vec<Stored> {
    let js = jetstream(url).await;
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
        out.push(Stored {
            subject: message.subject.to_string(),
            msg_id,
            envelope: wire::Envelope::from_json(&message.payload).expect("an envelope"),
        });
    }
    out
}

/// The number of messages in `stream` (0 if it does not exist or NATS is
/// down: callers poll it until it is what they expect).
pub async fn stream_len(url: &str, stream: &str) -> u64 {
    let Ok(client) = async_nats::connect(url).await else {
        return 0;
    };
    let js = jetstream::new(client);
    match js.get_stream(stream).await {
        Ok(mut handle) => handle.info().await.map_or(0, |i| i.state.messages),
        Err(_) => 0,
    }
}
