//! Clients and a small load generator: open connections through a VIP from a client
//! namespace, record which backend answered, keep long-lived connections echoing and
//! count the ones that broke. Every loop is bounded in count and time.

use std::{
    collections::BTreeMap,
    fmt,
    io::{BufRead, BufReader, ErrorKind, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{LabError, netns};

/// How long one request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// One TCP connection through `vip`: sends `whoami`, returns the backend's name.
/// Call from a thread inside the client namespace.
pub fn whoami_tcp(vip: SocketAddr) -> Result<String, String> {
    let stream =
        TcpStream::connect_timeout(&vip, REQUEST_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = stream.set_nodelay(true);
    // The client's port names the flow in a capture or in the LB's connection table.
    let from = stream
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    (&stream)
        .write_all(b"whoami\n")
        .map_err(|e| format!("send: {e} (from {from})"))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e} (from {from})"))?;
    let name = line.trim().to_string();
    if name.is_empty() {
        return Err("closed without an answer".into());
    }
    Ok(name)
}

/// One UDP request from a fresh socket (a new source port, so a new flow).
pub fn whoami_udp(vip: SocketAddr) -> Result<String, String> {
    let bind: SocketAddr = if vip.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(bind).map_err(|e| format!("bind: {e}"))?;
    socket.connect(vip).map_err(|e| format!("connect: {e}"))?;
    let _ = socket.set_read_timeout(Some(Duration::from_millis(500)));
    // UDP may lose a datagram on a busy 2-core machine: three tries.
    for _ in 0..3 {
        socket.send(b"whoami\n").map_err(|e| format!("send: {e}"))?;
        let mut buf = [0u8; 256];
        if let Ok(n) = socket.recv(&mut buf) {
            return Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string());
        }
    }
    Err("no UDP answer".into())
}

/// Which backends answered how many requests, and what failed.
#[derive(Debug, Default, Clone)]
pub struct Spread {
    /// Answers per backend name.
    pub counts: BTreeMap<String, u64>,
    /// One line per failed request.
    pub failures: Vec<String>,
}

impl Spread {
    /// Requests answered.
    pub fn answered(&self) -> u64 {
        self.counts.values().sum()
    }
    /// Answers from `backend`.
    pub fn count(&self, backend: &str) -> u64 {
        self.counts.get(backend).copied().unwrap_or(0)
    }
}

impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.answered().max(1);
        for (name, n) in &self.counts {
            write!(f, "{name}={n} ({:.1}%) ", 100.0 * *n as f64 / total as f64)?;
        }
        if !self.failures.is_empty() {
            write!(f, "failed={}", self.failures.len())?;
        }
        Ok(())
    }
}

/// The protocol of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// A new TCP connection per request.
    Tcp,
    /// A new UDP socket per request.
    Udp,
}

/// Sends `n` requests (each a new flow) through `vip` from namespace `netns`, with
/// `threads` parallel senders, stopping at `limit`. Returns the spread.
pub fn spread(
    netns: &str,
    vip: SocketAddr,
    proto: Proto,
    n: usize,
    threads: usize,
    limit: Duration,
) -> Result<Spread, LabError> {
    let deadline = Instant::now() + limit;
    let mut handles = Vec::new();
    for t in 0..threads {
        let share = n / threads + usize::from(t < n % threads);
        let ns = netns.to_string();
        handles.push(std::thread::spawn(move || -> Result<Spread, LabError> {
            netns::enter(&ns)?;
            let mut s = Spread::default();
            let mut in_a_row = 0;
            for _ in 0..share {
                if Instant::now() > deadline {
                    s.failures
                        .push("time limit reached before the request was sent".into());
                    continue;
                }
                // Fail fast when nothing gets through (each failure costs a timeout).
                if in_a_row >= 10 {
                    s.failures
                        .push("not sent: the previous 10 requests failed".into());
                    continue;
                }
                let r = match proto {
                    Proto::Tcp => whoami_tcp(vip),
                    Proto::Udp => whoami_udp(vip),
                };
                match r {
                    Ok(name) => {
                        in_a_row = 0;
                        *s.counts.entry(name).or_default() += 1;
                    }
                    Err(e) => {
                        in_a_row += 1;
                        s.failures.push(e);
                    }
                }
            }
            Ok(s)
        }));
    }
    let mut total = Spread::default();
    for h in handles {
        let s = h.join().expect("a client thread panicked")?;
        for (k, v) in s.counts {
            *total.counts.entry(k).or_default() += v;
        }
        total.failures.extend(s.failures);
    }
    Ok(total)
}

/// The fate of one long-lived connection.
#[derive(Debug, Clone)]
pub struct ConnReport {
    /// Index of the connection.
    pub index: usize,
    /// The backend that answered its `whoami`.
    pub backend: String,
    /// Bytes sent (after the `whoami`).
    pub sent: u64,
    /// Bytes echoed back and checked equal.
    pub echoed: u64,
    /// Why it broke, if it did (`reset`, `timeout`, `echo mismatch`, ...).
    pub broken: Option<String>,
}

/// The fate of all long-lived connections.
#[derive(Debug, Clone, Default)]
pub struct LongLivedReport {
    /// One entry per connection.
    pub conns: Vec<ConnReport>,
}

impl LongLivedReport {
    /// Connections that broke.
    pub fn broken(&self) -> Vec<&ConnReport> {
        self.conns.iter().filter(|c| c.broken.is_some()).collect()
    }
    /// Connections that were reset.
    pub fn resets(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| c.broken.as_deref() == Some("reset"))
            .count()
    }
    /// Connections per backend.
    pub fn per_backend(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for c in &self.conns {
            *m.entry(c.backend.clone()).or_default() += 1;
        }
        m
    }
    /// Bytes sent and bytes echoed, summed.
    pub fn bytes(&self) -> (u64, u64) {
        self.conns
            .iter()
            .fold((0, 0), |(s, e), c| (s + c.sent, e + c.echoed))
    }
    /// A readable list of broken connections (for assertion messages).
    pub fn describe_broken(&self) -> String {
        self.broken()
            .iter()
            .take(10)
            .map(|c| {
                format!(
                    "conn {} on {}: {} after {} bytes echoed",
                    c.index,
                    c.backend,
                    c.broken.as_deref().unwrap_or(""),
                    c.echoed
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Long-lived TCP connections that keep echoing until [`LongLived::finish`] (or their
/// time limit).
#[derive(Debug)]
pub struct LongLived {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Vec<ConnReport>>>,
    /// The backend of each connection, by index (known once they are open).
    pub backends: Vec<String>,
}

struct Conn {
    report: ConnReport,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    seq: u64,
}

impl LongLived {
    /// Opens `n` connections through `vip` from `netns` (each asks `whoami` first), then
    /// keeps each echoing a 64-byte line about every `pause`, on `threads` workers, until
    /// finished or `limit` has passed. Fails if a connection cannot be opened.
    pub fn start(
        netns: &str,
        vip: SocketAddr,
        n: usize,
        threads: usize,
        pause: Duration,
        limit: Duration,
    ) -> Result<LongLived, String> {
        let opened = netns::within(netns, move || {
            let mut conns = Vec::new();
            for index in 0..n {
                let stream = TcpStream::connect_timeout(&vip, REQUEST_TIMEOUT)
                    .map_err(|e| format!("long-lived conn {index}: connect to {vip}: {e}"))?;
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
                let writer = stream.try_clone().map_err(|e| e.to_string())?;
                let mut reader = BufReader::new(stream);
                (&writer)
                    .write_all(b"whoami\n")
                    .map_err(|e| format!("long-lived conn {index}: {e}"))?;
                let mut line = String::new();
                reader
                    .read_line(&mut line)
                    .map_err(|e| format!("long-lived conn {index}: whoami: {e}"))?;
                conns.push(Conn {
                    report: ConnReport {
                        index,
                        backend: line.trim().to_string(),
                        sent: 0,
                        echoed: 0,
                        broken: None,
                    },
                    reader,
                    writer,
                    seq: 0,
                });
            }
            Ok::<_, String>(conns)
        })
        .map_err(|e| e.to_string())??;
        let backends = opened.iter().map(|c| c.report.backend.clone()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + limit;
        let mut groups: Vec<Vec<Conn>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, c) in opened.into_iter().enumerate() {
            groups[i % threads].push(c);
        }
        let workers = groups
            .into_iter()
            .map(|mut group| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        for c in group.iter_mut().filter(|c| c.report.broken.is_none()) {
                            echo_once(c);
                        }
                        std::thread::sleep(pause);
                    }
                    // One last round, so every connection proves it still works at the end.
                    for c in group.iter_mut().filter(|c| c.report.broken.is_none()) {
                        echo_once(c);
                    }
                    group.into_iter().map(|c| c.report).collect()
                })
            })
            .collect();
        Ok(LongLived {
            stop,
            workers,
            backends,
        })
    }

    /// Stops the echo loops and returns what happened to every connection.
    pub fn finish(self) -> LongLivedReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut conns: Vec<ConnReport> = self
            .workers
            .into_iter()
            .flat_map(|w| w.join().expect("a long-lived worker panicked"))
            .collect();
        conns.sort_by_key(|c| c.index);
        LongLivedReport { conns }
    }
}

fn echo_once(c: &mut Conn) {
    c.seq += 1;
    // 64 bytes including the newline, unique per connection and round.
    let mut line = format!("conn {:05} round {:09} ", c.report.index, c.seq);
    while line.len() < 63 {
        line.push('-');
    }
    line.push('\n');
    if let Err(e) = c.writer.write_all(line.as_bytes()) {
        c.report.broken = Some(classify(&e));
        return;
    }
    c.report.sent += line.len() as u64;
    let mut back = String::new();
    match c.reader.read_line(&mut back) {
        Ok(0) => c.report.broken = Some("closed by peer".into()),
        Ok(_) if back == line => c.report.echoed += line.len() as u64,
        Ok(_) => c.report.broken = Some(format!("echo mismatch: {back:?}")),
        Err(e) => c.report.broken = Some(classify(&e)),
    }
}

fn classify(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => "reset".into(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "timeout".into(),
        ErrorKind::BrokenPipe => "broken pipe".into(),
        _ => e.to_string(),
    }
}
