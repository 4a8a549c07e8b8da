//! A TCP proxy in front of a shared test server (RabbitMQ, Redis) that a test can
//! cut and restore, so one client sees an outage while the server stays up for the
//! other clients and the other tests.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A proxy on 127.0.0.1 to one server; cut, it refuses and drops every connection.
pub struct CuttableProxy {
    /// `127.0.0.1:port` of the proxy, for the client to connect to.
    pub address: String,
    target: String,
    state: Arc<Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    accept: Option<JoinHandle<()>>,
    connections: Vec<JoinHandle<()>>,
}

impl CuttableProxy {
    /// Starts a proxy to `target` (`host:port`) on a free port.
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("address").to_string();
        let proxy = Self {
            address,
            target: target.to_owned(),
            state: Arc::new(Mutex::new(ProxyState::default())),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.state.clone();
        let target = self.target.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let connection = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .connections
                    .push(connection);
            }
        });
        self.lock().accept = Some(accept);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The server "goes away": once this returns, new connections are refused and
    /// open ones are closed.
    pub async fn cut(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut state = self.lock();
            state
                .accept
                .take()
                .into_iter()
                .chain(state.connections.drain(..))
                .collect()
        };
        for task in tasks {
            task.abort();
            // Done once the task, and the sockets it held, are dropped.
            let _ = task.await;
        }
    }

    /// The server is back, on the same address.
    pub async fn restore(&self) {
        let mut listener = None;
        for _ in 0..50 {
            match TcpListener::bind(&self.address).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        self.serve(listener.expect("rebind the proxy port"));
    }

    /// Drops open connections without refusing new ones (a connection loss).
    pub fn drop_connections(&self) {
        for connection in self.lock().connections.drain(..) {
            connection.abort();
        }
    }
}
