//! History arithmetic: from the agent-state transitions the engine persisted to the intervals of
//! `history --json` (INTERFACE.md). Pure: the caller reads the transitions from its index.
//!
//! An interval starts at each transition that changes status, work mode, reason or agent id and
//! ends where the next one of the same DN starts. Intervals are per (T-Server, DN): to show one
//! agent's history, pass the transitions of every DN it used (the next agent's login on a DN is
//! what ends the previous agent's last interval there) and keep the intervals with its id.

use ivrstate_model::{AgentId, AgentStatus, Dn, Micros, Seq, TServerName, WorkMode};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;

/// The agent state of one DN from a moment on: what the engine persists for each touched agent
/// entity (see `State::agent_snapshot`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AgentSnapshot {
    pub agent_id: Option<AgentId>,
    pub tserver: TServerName,
    pub dn: Dn,
    pub status: AgentStatus,
    pub work_mode: Option<WorkMode>,
    pub reason: Option<String>,
    pub start: Micros,
    pub start_seq: Seq,
}

impl AgentSnapshot {
    fn same_interval(&self, other: &AgentSnapshot) -> bool {
        self.status == other.status
            && self.work_mode == other.work_mode
            && self.reason == other.reason
            && self.agent_id == other.agent_id
    }
}

/// One row of `history --json`. The field names and their order are the contract.
#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct Interval {
    pub agent_id: Option<AgentId>,
    pub tserver: TServerName,
    pub dn: Dn,
    pub status: AgentStatus,
    #[serde(serialize_with = "work_mode_name")]
    pub work_mode: Option<WorkMode>,
    pub reason: Option<String>,
    /// Clipped to `from`.
    pub start: Micros,
    /// Clipped to `to`; None while the interval is still open.
    pub end: Option<Micros>,
    /// Seconds from `start` to `end`, or to `to` for an open interval; None for an open
    /// interval when no `to` was given.
    pub duration_s: Option<f64>,
    pub start_seq: Seq,
    pub end_seq: Option<Seq>,
    /// The start before clipping (not part of the JSON): tells audit whether a login happened
    /// inside the window.
    #[serde(skip)]
    pub unclipped_start: Micros,
}

/// `"ManualIn"`, or the number for a code outside the documented range (as logs print it).
fn work_mode_name<S: Serializer>(m: &Option<WorkMode>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.serialize_str(&m.name()),
        None => s.serialize_none(),
    }
}

/// Seconds between two times (never negative).
pub(crate) fn seconds(start: Micros, end: Micros) -> f64 {
    (end.0.saturating_sub(start.0)).max(0) as f64 / 1e6
}

/// Builds the intervals of the given transitions (any mix of DNs, any order), clipped to
/// `[from, to)`, oldest first (by start, then seq). Transitions that repeat the previous state of
/// their DN start nothing.
pub fn intervals(
    transitions: impl IntoIterator<Item = AgentSnapshot>,
    from: Option<Micros>,
    to: Option<Micros>,
) -> Vec<Interval> {
    let mut per_dn: BTreeMap<(TServerName, Dn), Vec<AgentSnapshot>> = BTreeMap::new();
    for t in transitions {
        per_dn
            .entry((t.tserver.clone(), t.dn.clone()))
            .or_default()
            .push(t);
    }
    let lo = from.unwrap_or(Micros::MIN);
    let hi = to.unwrap_or(Micros::MAX);
    let mut out = Vec::new();
    for mut ts in per_dn.into_values() {
        // Log order is the DN's order (its source's events are in order).
        ts.sort_by_key(|t| t.start_seq);
        ts.dedup_by(|next, prev| next.same_interval(prev));
        let ends: Vec<Option<(Micros, Seq)>> = ts
            .iter()
            .skip(1)
            .map(|n| Some((n.start, n.start_seq)))
            .chain(std::iter::once(None))
            .collect();
        for (t, end) in ts.into_iter().zip(ends) {
            // A later transition cannot end before its predecessor starts (the fold clamps
            // out-of-order times); guard anyway so a duration is never negative.
            let end = end.map(|(e, s)| (e.max(t.start), s));
            let end_time = end.map_or(Micros::MAX, |(e, _)| e);
            let overlaps =
                t.start < hi && (end_time > lo || (end_time == t.start && t.start >= lo));
            if !overlaps {
                continue;
            }
            let start = t.start.max(lo);
            let clipped_end = end.map(|(e, _)| e.min(hi));
            let duration_s = clipped_end.or(to).map(|e| seconds(start, e));
            out.push(Interval {
                agent_id: t.agent_id,
                tserver: t.tserver,
                dn: t.dn,
                status: t.status,
                work_mode: t.work_mode,
                reason: t.reason,
                start,
                end: clipped_end,
                duration_s,
                start_seq: t.start_seq,
                end_seq: end.map(|(_, s)| s),
                unclipped_start: t.start,
            });
        }
    }
    out.sort_by_key(|a| (a.start, a.start_seq));
    out
}
