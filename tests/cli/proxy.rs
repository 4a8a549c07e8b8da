//! A TCP proxy in front of a test server that can slow every connection down, so
//! a transfer can be interrupted part of the way through. Point the server's
//! `server.public_url` at it, so its signed URLs go through it too.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Bytes copied between two pauses.
const CHUNK: usize = 16 * 1024;

/// A proxy on 127.0.0.1:`port` to 127.0.0.1:`target` (set once the server runs).
pub struct SlowProxy {
    pub port: u16,
    target: Arc<AtomicU16>,
    slow: Arc<AtomicBool>,
}

impl SlowProxy {
    /// Starts the proxy; each direction of each connection is limited to
    /// `bytes_per_sec` while it is slow (it starts slow).
    pub fn start(bytes_per_sec: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let target = Arc::new(AtomicU16::new(0));
        let slow = Arc::new(AtomicBool::new(true));
        let pause = Duration::from_secs_f64(CHUNK as f64 / bytes_per_sec as f64);
        let (to, throttled) = (target.clone(), slow.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", to.load(Ordering::SeqCst)))
                else {
                    continue;
                };
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let (up, down) = (throttled.clone(), throttled.clone());
                thread::spawn(move || pump(client, server, &up, pause));
                thread::spawn(move || pump(server2, client2, &down, pause));
            }
        });
        Self { port, target, slow }
    }

    /// Forwards to the server on `port`.
    pub fn forward_to(&self, port: u16) {
        self.target.store(port, Ordering::SeqCst);
    }

    /// Stops slowing connections down (existing ones too).
    pub fn full_speed(&self) {
        self.slow.store(false, Ordering::SeqCst);
    }

    /// Slows connections down again.
    pub fn slow_down(&self) {
        self.slow.store(true, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, slow: &AtomicBool, pause: Duration) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if slow.load(Ordering::SeqCst) {
                    thread::sleep(pause.mul_f64(n as f64 / CHUNK as f64));
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
