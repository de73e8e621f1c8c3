//! A UDP relay on loopback that makes a link of the real internet: every
//! datagram waits a fixed one-way delay, and a seeded share of them is
//! dropped, each way. `capsule bench sync --rtt-ms --loss` puts it between
//! the two nodes, which still talk QUIC to each other end to end.
//!
//! One client at a time (the syncing node): datagrams from it go to the
//! upstream address from a socket of the relay's own, and what comes back
//! goes to the client's address. Threads, not tasks: the relay must keep
//! its delays while both nodes keep the cores busy.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// How often a waiting reader looks whether the relay stops.
const POLL: Duration = Duration::from_millis(50);

/// The largest datagram carried (QUIC sends at most 1,452 bytes on a
/// 1,500-byte path; loopback allows more).
const MAX_DATAGRAM: usize = 65_536;

/// The link the relay makes.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Delay each way (half the round trip).
    pub one_way: Duration,
    /// Share of datagrams dropped, each way, 0 to 1.
    pub loss: f64,
    /// Seed of the drops: the same seed drops the same datagrams by count.
    pub seed: u64,
}

/// What crossed the relay.
#[derive(Debug, Default)]
pub struct Counts {
    /// Datagrams carried.
    pub carried: AtomicU64,
    /// Datagrams dropped.
    pub dropped: AtomicU64,
}

/// A running relay; stops when dropped.
pub struct Relay {
    /// Where the client dials.
    pub addr: SocketAddr,
    /// What crossed it so far.
    pub counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// A datagram and when it may leave.
type Delayed = (Instant, Vec<u8>);

impl Relay {
    /// Starts a relay on 127.0.0.1 in front of `upstream`.
    pub fn start(upstream: SocketAddr, link: Link) -> Result<Relay> {
        anyhow::ensure!(
            (0.0..1.0).contains(&link.loss),
            "--loss must be at least 0 and below 1, not {}",
            link.loss
        );
        let front = UdpSocket::bind("127.0.0.1:0").context("cannot bind the relay")?;
        let back = UdpSocket::bind("127.0.0.1:0").context("cannot bind the relay")?;
        back.connect(upstream)
            .with_context(|| format!("cannot reach {upstream}"))?;
        for s in [&front, &back] {
            s.set_read_timeout(Some(POLL))?;
        }
        let addr = front.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (to_server, server_queue) = channel::<Delayed>();
        let (to_client, client_queue) = channel::<Delayed>();
        let mut threads = Vec::new();
        // Client → server.
        {
            let (front, stop, counts, client) = (
                front.try_clone()?,
                Arc::clone(&stop),
                Arc::clone(&counts),
                Arc::clone(&client),
            );
            let mut rng = ChaCha8Rng::seed_from_u64(link.seed);
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0; MAX_DATAGRAM];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = front.recv_from(&mut buf) else {
                        continue;
                    };
                    *client.lock().expect("relay lock") = Some(from);
                    admit(&buf[..n], link, &mut rng, &counts, &to_server);
                }
            }));
        }
        // Server → client.
        {
            let (back, stop, counts) = (back.try_clone()?, Arc::clone(&stop), Arc::clone(&counts));
            let mut rng = ChaCha8Rng::seed_from_u64(link.seed ^ 0x9e37_79b9_7f4a_7c15);
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0; MAX_DATAGRAM];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = back.recv(&mut buf) else {
                        continue;
                    };
                    admit(&buf[..n], link, &mut rng, &counts, &to_client);
                }
            }));
        }
        threads.push(deliver(server_queue, Arc::clone(&stop), move |d| {
            let _ = back.send(d);
        }));
        threads.push(deliver(client_queue, Arc::clone(&stop), move |d| {
            if let Some(to) = *client.lock().expect("relay lock") {
                let _ = front.send_to(d, to);
            }
        }));
        Ok(Relay {
            addr,
            counts,
            stop,
            threads,
        })
    }
}

/// Drops `datagram` with the link's chance, else queues it to leave after
/// the link's delay.
fn admit(
    datagram: &[u8],
    link: Link,
    rng: &mut ChaCha8Rng,
    counts: &Counts,
    queue: &Sender<Delayed>,
) {
    // 53 random bits: a uniform draw in [0, 1).
    let draw = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    if draw < link.loss {
        counts.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    counts.carried.fetch_add(1, Ordering::Relaxed);
    let _ = queue.send((Instant::now() + link.one_way, datagram.to_vec()));
}

/// Sends each queued datagram when its time comes, in order (one delay for
/// all keeps the queue sorted).
fn deliver(
    queue: Receiver<Delayed>,
    stop: Arc<AtomicBool>,
    send: impl Fn(&[u8]) + Send + 'static,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((at, datagram)) = queue.recv_timeout(POLL) else {
                continue;
            };
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            send(&datagram);
        }
    })
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagrams cross with the delay, and the seeded share is dropped.
    #[test]
    fn delays_and_drops_what_it_is_told() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let link = Link {
            one_way: Duration::from_millis(20),
            loss: 0.25,
            seed: 7,
        };
        let relay = Relay::start(server.local_addr().unwrap(), link).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let sent = Instant::now();
        client.send_to(b"first", relay.addr).unwrap();
        // Keep sending until one gets through (a quarter are dropped).
        let mut buf = [0; 64];
        let mut tries = 1;
        let (n, back_to) = loop {
            match server.recv_from(&mut buf) {
                Ok(got) => break got,
                Err(_) if tries < 20 => {
                    tries += 1;
                    client.send_to(b"first", relay.addr).unwrap();
                }
                Err(e) => panic!("nothing crossed: {e}"),
            }
        };
        assert_eq!(&buf[..n], b"first");
        assert!(sent.elapsed() >= link.one_way);
        server.send_to(b"answer", back_to).unwrap();
        for _ in 0..400 {
            client.send_to(b"x", relay.addr).unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
        let dropped = relay.counts.dropped.load(Ordering::Relaxed);
        let carried = relay.counts.carried.load(Ordering::Relaxed);
        let share = dropped as f64 / (dropped + carried) as f64;
        assert!((0.15..0.35).contains(&share), "dropped {share}");
    }
}
