//! What the EVENTS stream holds, by subject: how the benchmark knows that
//! every GUILD_CREATE, or every event of a storm, has been acknowledged by
//! JetStream (an ack is a stored message).

use std::collections::HashMap;

use anyhow::Context as _;
use async_nats::jetstream;
use futures::TryStreamExt as _;

/// Messages per subject (without the namespace) and the last sequence.
#[derive(Debug, Default)]
pub struct Counts {
    by_subject: HashMap<String, u64>,
    pub last_sequence: u64,
}

impl Counts {
    pub fn of(&self, subject: &str) -> u64 {
        self.by_subject.get(subject).copied().unwrap_or(0)
    }

    pub fn sum(&self, subjects: &[&str]) -> u64 {
        subjects.iter().map(|s| self.of(s)).sum()
    }
}

/// Reads the per-subject counts of the stream `name`, whose subjects carry
/// `namespace`. A stream the gateway has not created yet holds nothing.
pub async fn read(
    jetstream: &jetstream::Context,
    name: &str,
    namespace: &bus::Namespace,
) -> anyhow::Result<Counts> {
    let stream = match jetstream.get_stream(name).await {
        Ok(stream) => stream,
        Err(e) if not_found(&e) => return Ok(Counts::default()),
        Err(e) => return Err(e).with_context(|| format!("looking up stream {name}")),
    };
    let mut info = stream
        .info_with_subjects(namespace.subject(">"))
        .await
        .with_context(|| format!("reading the subjects of stream {name}"))?;
    let mut counts = Counts {
        last_sequence: info.info.state.last_sequence,
        ..Counts::default()
    };
    while let Some((subject, count)) = info
        .try_next()
        .await
        .with_context(|| format!("reading the subjects of stream {name}"))?
    {
        let plain = namespace.strip(&subject).unwrap_or(&subject).to_owned();
        *counts.by_subject.entry(plain).or_default() += count as u64;
    }
    Ok(counts)
}

fn not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Reads the counts again and again while the gateway loads the server:
/// a stream-info request that times out then is no failure of the run, so
/// the last counts stand until the server answers again.
pub struct Watch<'a> {
    jetstream: &'a jetstream::Context,
    name: &'a str,
    namespace: &'a bus::Namespace,
    last: Counts,
    failures: u32,
}

/// Consecutive failed readings (5 s each) before the run gives up.
const MAX_FAILURES: u32 = 12;

impl<'a> Watch<'a> {
    pub fn new(
        jetstream: &'a jetstream::Context,
        name: &'a str,
        namespace: &'a bus::Namespace,
    ) -> Self {
        Watch {
            jetstream,
            name,
            namespace,
            last: Counts::default(),
            failures: 0,
        }
    }

    /// Counts read now, however many attempts that takes (within the
    /// limit): a reading from earlier will not do.
    pub async fn fresh(&mut self) -> anyhow::Result<Counts> {
        let mut failures = 0;
        loop {
            match read(self.jetstream, self.name, self.namespace).await {
                Ok(counts) => return Ok(counts),
                Err(error) => {
                    failures += 1;
                    if failures >= MAX_FAILURES {
                        return Err(error.context(format!("{failures} readings in a row")));
                    }
                }
            }
        }
    }

    pub async fn poll(&mut self) -> anyhow::Result<&Counts> {
        match read(self.jetstream, self.name, self.namespace).await {
            Ok(counts) => {
                self.last = counts;
                self.failures = 0;
            }
            Err(error) => {
                self.failures += 1;
                if self.failures >= MAX_FAILURES {
                    return Err(error.context(format!("{} readings in a row", self.failures)));
                }
                tracing::debug!(error = %format!("{error:#}"), "stream counts not read this time");
            }
        }
        Ok(&self.last)
    }
}
