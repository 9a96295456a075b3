//! `vipctl trace --live`: one API connection arms the datapath's trace, reads the ring
//! and streams each record as a JSON line ([`Response::TraceRecord`]), then disarms.
//!
//! One session at a time: the trace maps are held by the session that runs (a second
//! gets an error saying so). Whatever ends the session (its count, its duration, the
//! client closing the connection or failing to read, vipd stopping and dropping its
//! tasks), the trace is disarmed when the session's `Armed` guard is dropped.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::watch,
};
use vip_common::{Reason, TRACE_NONE, TRACE_PICK_CONN, TRACE_PICK_MAGLEV, TraceRecord};

use crate::{
    cli::trace::verdict_name,
    datapath::trace::TraceMaps,
    protocol::{LiveRecord, Response, TraceEnd},
    tracematch,
};

/// How often the ring is read (the datapath does not wake the reader per record, so a
/// matching flood costs no interrupt per packet).
const POLL: Duration = Duration::from_millis(20);
/// How long a record line may take to reach a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Datapath ids → what they mean, kept current by the event loop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceNames {
    /// `VipMeta::id` → the VIP.
    pub vips: HashMap<u32, String>,
    /// Backend id → (VIP, backend address).
    pub backends: HashMap<u32, (String, SocketAddr)>,
}

/// The live trace of one vipd.
#[derive(Debug)]
pub struct Tracer {
    maps: Mutex<Option<TraceMaps>>,
    names: watch::Receiver<Arc<TraceNames>>,
}

impl Tracer {
    /// A tracer over `maps` (disarmed at once: a trace left armed is not ours).
    pub fn new(mut maps: TraceMaps, names: watch::Receiver<Arc<TraceNames>>) -> Self {
        if let Err(e) = maps.disarm() {
            tracing::warn!(error = %e, "could not disarm the live trace");
        }
        Tracer {
            maps: Mutex::new(Some(maps)),
            names,
        }
    }

    /// Whether a session holds the maps.
    pub fn busy(&self) -> bool {
        self.maps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }
}

/// A session's hold on the maps: disarms and gives them back when dropped.
struct Armed<'a> {
    tracer: &'a Tracer,
    maps: Option<TraceMaps>,
}

impl Armed<'_> {
    fn maps(&mut self) -> &mut TraceMaps {
        self.maps.as_mut().expect("held until drop")
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        if let Some(mut m) = self.maps.take() {
            if let Err(e) = m.disarm() {
                tracing::error!(error = %e, "disarming the live trace failed");
            }
            tracing::info!("live trace disarmed");
            *self.tracer.maps.lock().unwrap_or_else(|e| e.into_inner()) = Some(m);
        }
    }
}

/// The parameters of [`crate::protocol::Request::TraceLive`].
#[derive(Clone, Debug)]
pub struct Session {
    /// Match expression.
    pub expr: String,
    /// Records to send at most.
    pub count: Option<u64>,
    /// How long at most.
    pub duration: Option<Duration>,
    /// Frame bytes per record.
    pub snap_len: u32,
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, r: &Response) -> bool {
    let mut line = serde_json::to_string(r).expect("responses serialize");
    line.push('\n');
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, w.write_all(line.as_bytes())).await,
        Ok(Ok(()))
    )
}

/// Serves one live-trace session on a connection (`r` is its read side, watched for the
/// client going away; `w` its write side).
pub async fn serve<R, W>(tracer: &Tracer, s: Session, mut r: R, w: &mut W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let ctl = match tracematch::parse(&s.expr, s.snap_len) {
        Ok(c) => c,
        Err(e) => {
            send(w, &Response::err(format!("--match {:?}: {e}", s.expr))).await;
            return;
        }
    };
    let taken = tracer.maps.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(maps) = taken else {
        send(
            w,
            &Response::err(
                "another live trace is running (vipd serves one at a time): wait for it to end, or stop its vipctl",
            ),
        )
        .await;
        return;
    };
    let mut armed = Armed {
        tracer,
        maps: Some(maps),
    };
    let lost_before = armed.maps().lost().unwrap_or(0);
    if let Err(e) = armed.maps().arm(&ctl) {
        send(w, &Response::err(format!("arming the live trace: {e}"))).await;
        return;
    }
    tracing::info!(expr = %s.expr, count = ?s.count, duration = ?s.duration, "live trace armed");
    if !send(
        w,
        &Response::TraceStarted {
            expr: s.expr.clone(),
        },
    )
    .await
    {
        return;
    }
    let deadline = s.duration.map(|d| tokio::time::Instant::now() + d);
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(POLL);
    let mut byte = [0u8; 64];
    let why = 'session: loop {
        tokio::select! {
            n = r.read(&mut byte) => {
                // The client sends nothing after its request: EOF or an error is its
                // going away; anything else is ignored.
                if !matches!(n, Ok(k) if k > 0) {
                    tracing::info!(records = sent, "live trace client went away");
                    return;
                }
            }
            _ = async { tokio::time::sleep_until(deadline.expect("checked")).await }, if deadline.is_some() => {
                break 'session "duration";
            }
            _ = tick.tick() => {
                let names = tracer.names.borrow().clone();
                while let Some(rec) = armed.maps().next_record() {
                    sent += 1;
                    let line = Response::TraceRecord(live_record(sent, &rec, &names));
                    if !send(w, &line).await {
                        tracing::info!(records = sent, "live trace client stopped reading");
                        return;
                    }
                    if s.count.is_some_and(|c| sent >= c) {
                        break 'session "count";
                    }
                }
            }
        }
    };
    let lost = armed.maps().lost().unwrap_or(0).saturating_sub(lost_before);
    drop(armed);
    send(
        w,
        &Response::TraceEnd(TraceEnd {
            records: sent,
            lost,
            why: why.into(),
        }),
    )
    .await;
}

/// A ring record as the API reports it.
pub fn live_record(packet: u64, rec: &TraceRecord, names: &TraceNames) -> LiveRecord {
    let backend = names.backends.get(&rec.backend_id);
    let vip = (rec.vip_id != TRACE_NONE)
        .then(|| {
            names
                .vips
                .get(&rec.vip_id)
                .cloned()
                .unwrap_or_else(|| format!("VIP #{}", rec.vip_id))
        })
        .or_else(|| backend.map(|b| b.0.clone()));
    let snap = (rec.snap_len as usize).min(rec.frame.len());
    LiveRecord {
        packet,
        ktime_ns: rec.ktime_ns,
        ifindex: rec.ifindex,
        verdict: verdict_name(rec.action).into(),
        reason: Reason::from_index(rec.reason)
            .map_or_else(|| format!("reason #{}", rec.reason), |r| r.name().into()),
        vip,
        backend: backend.map(|b| b.1),
        backend_id: (rec.backend_id != TRACE_NONE).then_some(rec.backend_id),
        pick: match rec.pick {
            TRACE_PICK_CONN => "connection table",
            TRACE_PICK_MAGLEV => "maglev",
            _ => "none",
        }
        .into(),
        maglev_slot: (rec.pick == TRACE_PICK_MAGLEV).then_some(rec.maglev_slot),
        frame_len: rec.frame_len,
        frame_hex: rec.frame[..snap]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    }
}
