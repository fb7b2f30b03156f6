//! A TCP forwarder that can be cut: a dependency that goes away for one
//! process (a partition), while the others still reach it.

use std::net::SocketAddr;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards TCP connections to `target` until [`Cut::cut`], which closes
/// the listener and every connection: new ones are refused from then on.
pub struct Cut {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Cut {
    pub async fn to(target: SocketAddr) -> Cut {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("bound");
        let task = tokio::spawn(async move {
            // Dropped with this task, which aborts every connection in it.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Cut { addr, task }
    }

    pub async fn cut(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
