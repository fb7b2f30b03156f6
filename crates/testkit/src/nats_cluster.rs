//! A clustered JetStream for tests: N nats-servers on loopback, routed to
//! each other, each with a store of its own, logged into as
//! [`NatsServer`](crate::nats::NatsServer) is (the users and permissions
//! `gatehouse nats-config` generates, fresh passwords). A node can be killed
//! abruptly and restarted on the same port and store, and the waits here say
//! when the cluster (or one stream's replicas) is whole again, so a test
//! awaits recovery instead of sleeping through it.
//!
//! Written against nats-server 2.9 (Debian's 2.9.10). What that version
//! does, and the waits account for:
//!
//! - a node accepts clients before the cluster has a JetStream meta leader,
//!   and until it has one a JetStream request goes unanswered (no error: the
//!   client times out), so [`NatsCluster::ready`] polls with a short timeout;
//! - a stream is placed only on peers the meta leader has heard from, so
//!   `ready` also places a probe stream on every running node;
//! - when a group's leader dies, the others elect a new one only after 4 to
//!   9 s (Raft election timeouts); meanwhile publishes to the stream time out
//!   or find no responder, and stream info goes unanswered;
//! - a restarted replica reports `current` only once it has caught up with
//!   its group's leader; until then it is listed as offline or not current.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bus::authorization::{Authorization, Scope};
use bus::Process;
use futures::StreamExt;

use crate::nats::{access_with, free_ports, fresh_passwords, NatsAccess, Node, Passwords};

/// How often the waits ask the cluster again: each ask is a connection and
/// a few JetStream requests, so not as often as `eventually` polls.
const POLL: Duration = Duration::from_millis(100);

/// Several nats-servers forming one JetStream cluster; every node is killed
/// on drop.
pub struct NatsCluster {
    name: String,
    nodes: Vec<Node>,
    passwords: Passwords,
}

impl NatsCluster {
    /// `n` nodes with the users and permissions of the local stack (every
    /// namespace), all started. Await [`NatsCluster::ready`] before using
    /// JetStream.
    pub fn start(n: usize) -> Self {
        Self::start_with(n, &Authorization::new(Scope::Any))
    }

    /// `n` nodes with the users and permissions `authorization` generates.
    pub fn start_with(n: usize, authorization: &Authorization) -> Self {
        assert!(n >= 1, "a cluster needs a node");
        let name = format!("tk{:08x}", rand::random::<u32>());
        let ports = free_ports(2 * n);
        let (clients, routes) = ports.split_at(n);
        let nodes = (0..n)
            .map(|i| Node::new(clients[i], authorization, &node_config(&name, i, routes)))
            .collect();
        let mut cluster = NatsCluster {
            name,
            nodes,
            passwords: fresh_passwords(),
        };
        for i in 0..n {
            cluster.restart(i);
        }
        cluster
    }

    /// The cluster's name (`cluster.name` of every node).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s `server_name`: what stream and consumer info call it.
    pub fn server_name(&self, i: usize) -> String {
        server_name(i)
    }

    /// The node a `server_name` from stream or consumer info names.
    pub fn index_of(&self, server_name: &str) -> Option<usize> {
        (0..self.len()).find(|&i| self.server_name(i) == server_name)
    }

    /// Node `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// Every node's URL, comma-separated (what `NATS_URL` takes).
    pub fn urls(&self) -> String {
        (0..self.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every node's URL and every process's login: a client connects to
    /// whichever node answers and moves to another when that one goes.
    pub fn access(&self) -> NatsAccess {
        access_with(self.urls(), &self.passwords)
    }

    /// Node `i` alone, to ask that node in particular.
    pub fn node_access(&self, i: usize) -> NatsAccess {
        access_with(self.url(i), &self.passwords)
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].is_running()
    }

    /// What node `i` has logged so far.
    pub fn log(&self, i: usize) -> String {
        self.nodes[i].log()
    }

    /// Every node's log, headed by its name: for failure messages.
    pub fn logs(&self) -> String {
        (0..self.len())
            .map(|i| format!("--- {} ---\n{}", self.server_name(i), self.log(i)))
            .collect()
    }

    /// Kills node `i` (abruptly, as a crash would).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` (again) on its port and store. It accepts clients on
    /// return; await [`NatsCluster::caught_up`] for its replicas.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].start(&self.passwords);
    }

    /// Waits until every running node answers JetStream requests and a
    /// stream can be placed on all of them (the meta leader knows every
    /// peer); panics after `within`, with the logs.
    pub async fn ready(&self, within: Duration) {
        let running: Vec<usize> = (0..self.len()).filter(|&i| self.is_running(i)).collect();
        for &i in &running {
            let access = self.node_access(i);
            let answered = crate::eventually::holds_within(within, || {
                let access = access.clone();
                async move { jetstream_answers(&access).await }
            })
            .await;
            assert!(
                answered,
                "{} did not answer JetStream requests within {within:?}: {}",
                self.server_name(i),
                self.logs()
            );
        }
        // The one proof that the meta leader knows every peer.
        let js = self
            .admin()
            .await
            .unwrap_or_else(|| panic!("no node of the cluster answers: {}", self.logs()));
        let probe = format!("TESTKIT_PROBE_{:08x}", rand::random::<u32>());
        let config = stream::Config {
            name: probe.clone(),
            subjects: vec![format!("testkit.probe.{probe}")],
            storage: stream::StorageType::Memory,
            num_replicas: running.len(),
            ..stream::Config::default()
        };
        let placed = crate::eventually::holds_within(within, || {
            let (js, config) = (js.clone(), config.clone());
            async move { js.get_or_create_stream(config).await.is_ok() }
        })
        .await;
        assert!(
            placed,
            "no stream with {} replicas could be placed within {within:?}: {}",
            running.len(),
            self.logs()
        );
        self.caught_up(&probe, within).await;
        let _ = js.delete_stream(&probe).await;
    }

    /// The node leading `stream`'s group now, if it has a leader.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        let js = self.admin().await?;
        let info = js.get_stream(stream).await.ok()?.cached_info().clone();
        self.index_of(info.cluster?.leader.as_deref()?)
    }

    /// The node leading consumer `consumer` of `stream` now, if it has a
    /// leader.
    pub async fn consumer_leader(&self, stream: &str, consumer: &str) -> Option<usize> {
        let js = self.admin().await?;
        let info = js
            .get_stream(stream)
            .await
            .ok()?
            .consumer_info(consumer)
            .await
            .ok()?;
        self.index_of(info.cluster?.leader.as_deref()?)
    }

    /// Moves the leadership of consumer `consumer` of `stream` until the
    /// node leading the stream leads it too, so that one crash takes both the
    /// publishers' side and the consumers' side; returns that node. A
    /// step-down hands leadership to a random follower, hence the loop.
    pub async fn lead_together(&self, stream: &str, consumer: &str, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let leaders = (
                self.stream_leader(stream).await,
                self.consumer_leader(stream, consumer).await,
            );
            match leaders {
                (Some(s), Some(c)) if s == c => return s,
                (Some(_), Some(c)) => {
                    if let Some(js) = self.admin().await {
                        let subject = format!("CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}");
                        let _: Result<serde_json::Value, _> =
                            js.request(subject, &serde_json::json!({})).await;
                    }
                    // Until another node has taken over, a leader read
                    // would still name the old one.
                    while tokio::time::Instant::now() < deadline
                        && self
                            .consumer_leader(stream, consumer)
                            .await
                            .is_none_or(|now| now == c)
                    {
                        tokio::time::sleep(POLL).await;
                    }
                }
                _ => tokio::time::sleep(POLL).await,
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{consumer} on {stream} not led by the stream's leader within {within:?} (leaders {leaders:?})"
            );
        }
    }

    /// Waits until `stream` and every consumer on it have a leader and each
    /// of their other replicas is online and current (after a restart: has
    /// caught up); panics after `within`, saying what lagged.
    pub async fn caught_up(&self, stream: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let why = match self.lagging(stream).await {
                Ok(()) => return,
                Err(why) => why,
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "{stream} did not catch up within {within:?}: {why}\n{}",
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// `Ok` when `stream` and its consumers are whole, else what is not.
    async fn lagging(&self, stream: &str) -> Result<(), String> {
        let js = self.admin().await.ok_or("no node answers")?;
        let mut handle = js
            .get_stream(stream)
            .await
            .map_err(|e| format!("stream info: {e}"))?;
        let info = handle
            .info()
            .await
            .map_err(|e| format!("stream info: {e}"))?;
        let replicas = info.config.num_replicas.max(1);
        whole(&format!("stream {stream}"), info.cluster.as_ref(), replicas)?;
        let mut consumers = handle.consumers();
        while let Some(consumer) = consumers.next().await {
            let consumer = consumer.map_err(|e| format!("consumer info: {e}"))?;
            // A consumer without replicas of its own has its stream's.
            let replicas = match consumer.config.num_replicas {
                0 => replicas,
                n => n,
            };
            whole(
                &format!("consumer {}", consumer.name),
                consumer.cluster.as_ref(),
                replicas,
            )?;
        }
        Ok(())
    }

    /// JetStream as the admin user, if any node answers.
    async fn admin(&self) -> Option<jetstream::Context> {
        let client = self
            .access()
            .settings(Process::Admin)
            .connect(Process::Admin)
            .await
            .ok()?;
        Some(polling(client))
    }
}

/// Whether a group of `replicas` has a leader and every other member is
/// online and current.
fn whole(what: &str, cluster: Option<&stream::ClusterInfo>, replicas: usize) -> Result<(), String> {
    if replicas == 1 {
        return Ok(());
    }
    let cluster = cluster.ok_or_else(|| format!("{what}: no cluster info"))?;
    if cluster.leader.is_none() {
        return Err(format!("{what}: no leader"));
    }
    if cluster.replicas.len() + 1 != replicas {
        return Err(format!(
            "{what}: {} followers of {replicas} replicas",
            cluster.replicas.len()
        ));
    }
    match cluster.replicas.iter().find(|p| !p.current || p.offline) {
        Some(peer) => Err(format!(
            "{what}: replica {} is {} (lag {:?}, last seen {:?} ago)",
            peer.name,
            if peer.offline {
                "offline"
            } else {
                "not current"
            },
            peer.lag,
            peer.active
        )),
        None => Ok(()),
    }
}

/// Whether the server `access` reaches answers a JetStream request, which
/// a clustered server does only once it has a meta leader.
async fn jetstream_answers(access: &NatsAccess) -> bool {
    let Ok(client) = access
        .settings(Process::Admin)
        .connect(Process::Admin)
        .await
    else {
        return false;
    };
    let js = polling(client);
    // Read raw: only whether it is an answer or an error matters.
    let answer: Result<serde_json::Value, _> = js.request("INFO", &serde_json::json!({})).await;
    answer.is_ok_and(|v| v.get("error").is_none())
}

/// JetStream for polling: a cluster without a leader leaves a request
/// unanswered (2.9 sends no error), and the default timeout would make
/// each poll wait seconds past the moment the leader is back.
fn polling(client: async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(client)
}

fn server_name(i: usize) -> String {
    format!("n{i}")
}

/// Node `i`'s configuration: its name and its routes to every other node.
fn node_config(cluster: &str, i: usize, routes: &[u16]) -> String {
    let others: String = routes
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .map(|(_, port)| format!("    nats-route://127.0.0.1:{port}\n"))
        .collect();
    format!(
        "# Node {i} of a test cluster.\n\
         server_name: {name}\n\
         cluster {{\n  name: {cluster}\n  listen: 127.0.0.1:{listen}\n  routes: [\n{others}  ]\n}}\n",
        name = server_name(i),
        listen = routes[i],
    )
}
