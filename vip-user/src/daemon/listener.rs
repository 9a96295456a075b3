//! What vipd's two listeners (the API socket and the metrics port) do the same way: accept
//! with a back-off when the process or the system is out of file descriptors (instead of
//! retrying at once, which spins a CPU and starves everything else), and hold every
//! connection in a [`Slot`] counted against the listener's cap.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

/// How long an accept loop waits after running out of descriptors or memory.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// True for the accept errors that mean "out of resources": retrying at once would fail
/// again.
pub fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Accepts the next connection: on running out of descriptors it logs (once per episode)
/// and waits [`ACCEPT_BACKOFF`] before trying again; other failures (a client that gave up
/// before it was accepted) are skipped.
pub async fn accept<T, F, Fut>(what: &'static str, mut accept: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::io::Result<T>>,
{
    let mut starved = false;
    loop {
        match accept().await {
            Ok(c) => {
                if starved {
                    tracing::info!(listener = what, "accepting connections again");
                }
                return c;
            }
            Err(e) if out_of_resources(&e) => {
                if !starved {
                    starved = true;
                    tracing::warn!(listener = what, error = %e, "cannot accept connections: out of file descriptors or memory; retrying every 100 ms (raise LimitNOFILE, or lower the listeners' max_connections)");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            Err(e) => {
                tracing::debug!(listener = what, error = %e, "accept failed");
                // Not a resource problem, but never a busy loop either.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// A listener's connection count and cap.
#[derive(Debug)]
pub struct Slots {
    active: AtomicUsize,
    max: usize,
}

impl Slots {
    /// A cap of `max` connections at once.
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            active: AtomicUsize::new(0),
            max,
        })
    }

    /// A slot, or `None` if `max` connections are open already.
    pub fn take(self: &Arc<Self>) -> Option<Slot> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// Connections open now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// One connection's place under the cap; given back on drop.
#[derive(Debug)]
pub struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The soft open-files limit of this process (`None` if it cannot be read or is
/// unlimited).
pub fn open_files_limit() -> Option<u64> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
    (rc == 0 && l.rlim_cur != libc::RLIM_INFINITY).then_some(l.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_connections_and_come_back_on_drop() {
        let s = Slots::new(2);
        let a = s.take().unwrap();
        let _b = s.take().unwrap();
        assert!(s.take().is_none());
        assert_eq!(s.active(), 2);
        drop(a);
        assert!(s.take().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn out_of_descriptors_backs_off_instead_of_spinning() {
        let mut calls = 0;
        let start = tokio::time::Instant::now();
        let got = accept("test", || {
            calls += 1;
            let n = calls;
            async move {
                if n <= 5 {
                    Err(std::io::Error::from_raw_os_error(libc::EMFILE))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(got, 6);
        assert_eq!(start.elapsed(), 5 * ACCEPT_BACKOFF);
    }
}
