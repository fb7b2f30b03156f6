//! The gateway WebSocket listener.

pub(crate) mod compress;
pub(crate) mod connection;
pub(crate) mod identify_limit;
pub(crate) mod member_requests;
pub(crate) mod sessions;
pub(crate) mod transcript;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::state::Shared;

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    tokio::spawn(connection::serve(Arc::clone(&shared), tcp));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "gateway accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}
