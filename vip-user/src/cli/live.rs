//! `vipctl trace --live`: asks the running vipd to trace matching packets and prints each
//! decision as it happens, in the layout of the replay trace; optionally writes the
//! frames to a pcapng file.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::PathBuf,
    time::Duration,
};

use pcap_file::{
    DataLink,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
        },
    },
};

use super::{Cli, CliError, Output, TraceArgs, client, socket_path, trace::parse_flow};
use crate::protocol::{LiveRecord, Request, Response, TraceEnd};

/// Why a live trace failed on vipctl's side.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// `--write` could not be created or written.
    #[error("writing the capture {}: {detail}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// vipd refused or failed the trace.
    #[error("{0}")]
    Refused(String),
    /// vipd closed the connection before the session's end.
    #[error("vipd closed the connection after {0} records without ending the trace (stopped?)")]
    Cut(u64),
}

/// The frames of a session, as a pcapng file.
struct Capture {
    path: PathBuf,
    writer: PcapNgWriter<BufWriter<File>>,
    /// Real time less monotonic time, ns: turns the datapath's clock into wall time.
    offset_ns: i128,
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to fill.
    unsafe { libc::clock_gettime(id, &mut t) };
    i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
}

impl Capture {
    fn create(path: &PathBuf, snaplen: u32) -> Result<Self, LiveError> {
        let err = |detail: String| LiveError::Write {
            path: path.clone(),
            detail,
        };
        let f = File::create(path).map_err(|e| err(e.to_string()))?;
        let mut writer = PcapNgWriter::new(BufWriter::new(f)).map_err(|e| err(e.to_string()))?;
        writer
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen,
                options: vec![],
            })
            .map_err(|e| err(e.to_string()))?;
        Ok(Capture {
            path: path.clone(),
            writer,
            offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC),
        })
    }

    fn add(&mut self, r: &LiveRecord) -> Result<(), LiveError> {
        let data = unhex(&r.frame_hex);
        if data.is_empty() {
            return Ok(());
        }
        let ns = (i128::from(r.ktime_ns) + self.offset_ns).max(0) as u128;
        let ts = Duration::new((ns / 1_000_000_000) as u64, (ns % 1_000_000_000) as u32);
        self.writer
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: ts,
                original_len: r.frame_len,
                data: data.into(),
                options: vec![],
            })
            .map_err(|e| LiveError::Write {
                path: self.path.clone(),
                detail: e.to_string(),
            })?;
        Ok(())
    }

    fn finish(self) -> Result<(), LiveError> {
        self.writer
            .into_inner()
            .flush()
            .map_err(|e| LiveError::Write {
                path: self.path,
                detail: e.to_string(),
            })
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// One live record for people, laid out as the replay trace lays out a packet.
pub fn render(r: &LiveRecord) -> String {
    let frame = unhex(&r.frame_hex);
    let flow = parse_flow(&frame).map(|(p, s, d)| format!("{p} {s} -> {d}"));
    let pick = match (r.pick.as_str(), r.maglev_slot) {
        ("maglev", Some(s)) => format!(" (Maglev slot {s})"),
        ("connection table", _) => " (connection table)".into(),
        _ => String::new(),
    };
    let backend = r.backend.map_or_else(
        || {
            r.backend_id
                .map_or("none".to_string(), |id| format!("backend #{id}"))
        },
        |b| b.to_string(),
    );
    format!(
        "packet {}: {} ({} bytes, ifindex {})\n  verdict: {} ({})\n  vip:     {}\n  backend: {}{}\n",
        r.packet,
        flow.as_deref().unwrap_or("not TCP/UDP over IP"),
        r.frame_len,
        r.ifindex,
        r.verdict,
        r.reason,
        r.vip.as_deref().unwrap_or("none"),
        backend,
        pick,
    )
}

fn end_line(e: &TraceEnd) -> String {
    format!(
        "trace ended ({}): {} records, {} records lost\n",
        e.why, e.records, e.lost
    )
}

/// Runs `vipctl trace --live`: prints as records arrive; returns the closing text.
pub fn run(cli: &Cli, args: &TraceArgs) -> Result<String, CliError> {
    let req = Request::TraceLive {
        expr: args.match_expr.clone().unwrap_or_default(),
        count: args.count,
        duration_ms: args.duration.map(|d| d.as_millis() as u64),
        snap_len: args.snaplen,
    };
    let mut capture = match &args.write {
        Some(p) => Some(Capture::create(p, args.snaplen).map_err(live)?),
        None => None,
    };
    let mut out = std::io::stdout();
    let mut failure: Option<LiveError> = None;
    let mut end: Option<TraceEnd> = None;
    let mut seen = 0u64;
    client::stream(&socket_path(cli), &req, cli.wait, |resp| {
        let line = match resp {
            Response::TraceStarted { expr } => {
                (cli.output == Output::Table).then(|| format!("tracing '{expr}' (Ctrl-C stops)\n"))
            }
            Response::TraceRecord(r) => {
                seen += 1;
                if let Some(c) = capture.as_mut()
                    && let Err(e) = c.add(&r)
                {
                    failure = Some(e);
                    return false;
                }
                Some(match cli.output {
                    Output::Table => render(&r),
                    Output::Json => serde_json::to_string(&r).expect("serializes") + "\n",
                })
            }
            Response::TraceEnd(e) => {
                end = Some(e);
                return false;
            }
            Response::Error(m) => {
                failure = Some(LiveError::Refused(m));
                return false;
            }
            other => {
                failure = Some(LiveError::Refused(format!(
                    "vipd answered {} to a live trace",
                    other.kind()
                )));
                return false;
            }
        };
        if let Some(l) = line {
            let _ = out.write_all(l.as_bytes());
            let _ = out.flush();
        }
        true
    })?;
    if let Some(c) = capture {
        c.finish().map_err(live)?;
    }
    if let Some(f) = failure {
        return Err(live(f));
    }
    match end {
        Some(e) => Ok(match cli.output {
            Output::Table => end_line(&e),
            Output::Json => serde_json::to_string(&e).expect("serializes") + "\n",
        }),
        None => Err(live(LiveError::Cut(seen))),
    }
}

fn live(e: LiveError) -> CliError {
    CliError::Live(Box::new(e))
}
