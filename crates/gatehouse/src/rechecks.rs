//! Re-check requests from the command line go to the workers over
//! JetStream, like everyone else's (the API's publisher).

pub use api::BusRechecks;

/// The publisher for the NATS settings given on the command line.
pub async fn connect(nats: &crate::nats_args::NatsArgs) -> anyhow::Result<BusRechecks> {
    Ok(BusRechecks::new(
        async_nats::jetstream::new(nats.connect(bus::Process::Api).await?),
        nats.namespace()?,
    ))
}
