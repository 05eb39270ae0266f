//! A TCP load balancer on loopback, as a Service or an Ingress in front of
//! the nodes: each connection goes to the next backend, round robin,
//! skipping one that refuses it (a node that stopped accepting). Or, for
//! long-polling, whose requests must all reach the node holding their
//! session, in failover order: every connection to the first backend that
//! accepts it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Balancer {
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    /// Starts balancing over `backends` (`host:port`), round robin.
    pub async fn start(backends: Vec<String>) -> Self {
        Self::spawn(backends, true).await
    }

    /// Starts sending every connection to the first of `backends` that
    /// accepts it: sticky while that node accepts, the next one after.
    pub async fn failover(backends: Vec<String>) -> Self {
        Self::spawn(backends, false).await
    }

    async fn spawn(backends: Vec<String>, round_robin: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let backends = Arc::new(backends);
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (backends, next) = (Arc::clone(&backends), Arc::clone(&next));
                tokio::spawn(async move {
                    let first = if round_robin {
                        next.fetch_add(1, Ordering::Relaxed)
                    } else {
                        0
                    };
                    for attempt in 0..backends.len() {
                        let backend = &backends[(first + attempt) % backends.len()];
                        if let Ok(mut server) = tokio::net::TcpStream::connect(backend).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            return;
                        }
                    }
                });
            }
        });
        Self { address, task }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
