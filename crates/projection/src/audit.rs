//! Audit arithmetic (`ivrstate audit`): per agent, time in each status, logins, and NotReady time
//! per reason and per work mode, over a window. Pure: it adds up intervals.
//!
//! Conventions:
//! - Intervals without an agent id (a DN whose events never named one) belong to nobody and
//!   are left out.
//! - An open interval counts up to `to`; with no `to` it counts nothing (there is no "now" in a
//!   pure function: the engine passes the state's last event time when the user gave none).
//! - A login is a LoggedIn interval that starts inside the window (a login before `from` whose
//!   LoggedIn interval reaches into the window is not counted again).
//! - NotReady time without a reason or without a work mode is filed under [`NONE_KEY`].

use crate::history::{seconds, Interval};
use ivrstate_model::{AgentId, AgentStatus, Micros};
use serde::Serialize;
use std::collections::BTreeMap;

/// The key for NotReady time that had no reason / no work mode.
pub const NONE_KEY: &str = "(none)";

/// Seconds in each status (Unknown never occurs in state: it counts as LoggedOut).
#[derive(Clone, PartialEq, Debug, Default, Serialize)]
pub struct StatusSeconds {
    #[serde(rename = "LoggedIn")]
    pub logged_in: f64,
    #[serde(rename = "Ready")]
    pub ready: f64,
    #[serde(rename = "NotReady")]
    pub not_ready: f64,
    #[serde(rename = "LoggedOut")]
    pub logged_out: f64,
}

impl StatusSeconds {
    pub fn total(&self) -> f64 {
        self.logged_in + self.ready + self.not_ready + self.logged_out
    }

    fn add(&mut self, status: AgentStatus, s: f64) {
        match status {
            AgentStatus::LoggedIn => self.logged_in += s,
            AgentStatus::Ready => self.ready += s,
            AgentStatus::NotReady => self.not_ready += s,
            AgentStatus::LoggedOut | AgentStatus::Unknown => self.logged_out += s,
        }
    }
}

/// One agent's audit over the window. JSON: `{"agent_id", "logins", "total_s", "status_s":
/// {"LoggedIn","Ready","NotReady","LoggedOut"}, "not_ready_reason_s": {..}, "not_ready_work_mode_s": {..}}`.
#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct AgentAudit {
    pub agent_id: AgentId,
    pub logins: u64,
    /// Seconds covered by the agent's intervals in the window (the sum of `status_s`).
    pub total_s: f64,
    pub status_s: StatusSeconds,
    pub not_ready_reason_s: BTreeMap<String, f64>,
    pub not_ready_work_mode_s: BTreeMap<String, f64>,
}

/// Adds up `intervals` (as built by [`crate::intervals`], clipped or not) over `[from, to)`,
/// per agent id, sorted by agent id.
pub fn audit(intervals: &[Interval], from: Option<Micros>, to: Option<Micros>) -> Vec<AgentAudit> {
    let lo = from.unwrap_or(Micros::MIN);
    let hi = to.unwrap_or(Micros::MAX);
    let mut per_agent: BTreeMap<&AgentId, AgentAudit> = BTreeMap::new();
    for iv in intervals {
        let Some(id) = &iv.agent_id else { continue };
        let start = iv.start.max(lo);
        let end = match iv.end.or(to) {
            Some(e) => e.min(hi),
            None => start,
        };
        let in_window = iv.unclipped_start >= lo && iv.unclipped_start < hi;
        if end < start || start >= hi {
            continue;
        }
        let a = per_agent.entry(id).or_insert_with(|| AgentAudit {
            agent_id: id.clone(),
            logins: 0,
            total_s: 0.0,
            status_s: StatusSeconds::default(),
            not_ready_reason_s: BTreeMap::new(),
            not_ready_work_mode_s: BTreeMap::new(),
        });
        if iv.status == AgentStatus::LoggedIn && in_window {
            a.logins += 1;
        }
        let s = seconds(start, end);
        a.status_s.add(iv.status, s);
        if iv.status == AgentStatus::NotReady {
            *a.not_ready_reason_s
                .entry(iv.reason.clone().unwrap_or_else(|| NONE_KEY.into()))
                .or_default() += s;
            let mode = iv
                .work_mode
                .map_or_else(|| NONE_KEY.to_owned(), |m| m.name());
            *a.not_ready_work_mode_s.entry(mode).or_default() += s;
        }
    }
    per_agent
        .into_values()
        .map(|mut a| {
            a.total_s = a.status_s.total();
            a
        })
        .collect()
}
