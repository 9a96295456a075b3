//! The live trace's maps (`vip_common::trace`): the control entry vipd's trace session
//! writes (the only writer), the ring it reads records from, and the count of records
//! the ring had no room for.

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use vip_common::{MAP_TRACE_CTL, MAP_TRACE_LOST, MAP_TRACE_RING, TraceCtl, TraceRecord};

use super::{Datapath, DatapathError, OPENING_TYPED, map_err, take};

/// The trace maps of one loaded `vip_lb`, taken out of the [`Datapath`] for the trace
/// session (the owner task never touches them).
pub struct TraceMaps {
    ctl: Array<MapData, TraceCtl>,
    ring: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for TraceMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceMaps").finish_non_exhaustive()
    }
}

impl Datapath {
    /// Takes the trace maps out of the datapath (once; the second call fails naming the
    /// map).
    pub fn take_trace(&mut self) -> Result<TraceMaps, DatapathError> {
        let ebpf = &mut self.ebpf;
        Ok(TraceMaps {
            ctl: take(ebpf, MAP_TRACE_CTL)?
                .try_into()
                .map_err(map_err(MAP_TRACE_CTL, OPENING_TYPED))?,
            ring: take(ebpf, MAP_TRACE_RING)?
                .try_into()
                .map_err(map_err(MAP_TRACE_RING, OPENING_TYPED))?,
            lost: take(ebpf, MAP_TRACE_LOST)?
                .try_into()
                .map_err(map_err(MAP_TRACE_LOST, OPENING_TYPED))?,
        })
    }
}

impl TraceMaps {
    /// Starts tracing with `ctl`: drops records left in the ring, writes the match with
    /// `active` clear, then sets it, so the datapath never sees half a match.
    pub fn arm(&mut self, ctl: &TraceCtl) -> Result<(), DatapathError> {
        while self.ring.next().is_some() {}
        let mut off = *ctl;
        off.active = 0;
        self.ctl
            .set(0, off, 0)
            .map_err(map_err(MAP_TRACE_CTL, "writing the trace match"))?;
        let mut on = *ctl;
        on.active = 1;
        self.ctl
            .set(0, on, 0)
            .map_err(map_err(MAP_TRACE_CTL, "arming the trace"))
    }

    /// Stops tracing: the datapath is back to one read and a branch per packet.
    pub fn disarm(&mut self) -> Result<(), DatapathError> {
        self.ctl
            .set(0, TraceCtl::default(), 0)
            .map_err(map_err(MAP_TRACE_CTL, "disarming the trace"))
    }

    /// Whether the datapath is tracing (the control entry's `active`).
    pub fn armed(&self) -> Result<bool, DatapathError> {
        let c = self
            .ctl
            .get(&0, 0)
            .map_err(map_err(MAP_TRACE_CTL, "reading the trace control"))?;
        Ok(c.active != 0)
    }

    /// Records lost to a full ring since the maps were created, all CPUs.
    pub fn lost(&self) -> Result<u64, DatapathError> {
        let v = self
            .lost
            .get(&0, 0)
            .map_err(map_err(MAP_TRACE_LOST, "reading the lost-record count"))?;
        Ok(v.iter().sum())
    }

    /// The next record in the ring, if any (an item that is not a record is skipped).
    pub fn next_record(&mut self) -> Option<TraceRecord> {
        loop {
            let item = self.ring.next()?;
            if let Some(rec) = TraceRecord::from_ring(&item) {
                return Some(rec);
            }
        }
    }
}
