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

impl AgentAudit {
    pub(crate) fn new(agent_id: AgentId) -> AgentAudit {
        AgentAudit {
            agent_id,
            logins: 0,
            total_s: 0.0,
            status_s: StatusSeconds::default(),
            not_ready_reason_s: BTreeMap::new(),
            not_ready_work_mode_s: BTreeMap::new(),
        }
    }

    /// Sets `total_s` from the statuses once everything is added.
    pub(crate) fn finish(mut self) -> AgentAudit {
        self.total_s = self.status_s.total();
        self
    }

    /// Adds `[start, end)` of `iv` (already clipped), and a login when `login`.
    pub(crate) fn add(&mut self, iv: &Interval, start: Micros, end: Micros, login: bool) {
        if login {
            self.logins += 1;
        }
        let s = seconds(start, end);
        self.status_s.add(iv.status, s);
        if iv.status == AgentStatus::NotReady {
            *self
                .not_ready_reason_s
                .entry(iv.reason.clone().unwrap_or_else(|| NONE_KEY.into()))
                .or_default() += s;
            let mode = iv
                .work_mode
                .map_or_else(|| NONE_KEY.to_owned(), |m| m.name());
            *self.not_ready_work_mode_s.entry(mode).or_default() += s;
        }
    }
}

/// The part of `iv` that counts in `[from, to)` (see the conventions above): its clipped start
/// and end, and whether its login happened inside the window. None when nothing of it counts.
pub(crate) fn clip(
    iv: &Interval,
    from: Option<Micros>,
    to: Option<Micros>,
) -> Option<(Micros, Micros, bool)> {
    let lo = from.unwrap_or(Micros::MIN);
    let hi = to.unwrap_or(Micros::MAX);
    let start = iv.start.max(lo);
    let end = match iv.end.or(to) {
        Some(e) => e.min(hi),
        None => start,
    };
    if end < start || start >= hi {
        return None;
    }
    let login =
        iv.status == AgentStatus::LoggedIn && iv.unclipped_start >= lo && iv.unclipped_start < hi;
    Some((start, end, login))
}

/// Adds up `intervals` (as built by [`crate::intervals`], clipped or not) over `[from, to)`,
/// per agent id, sorted by agent id.
pub fn audit(intervals: &[Interval], from: Option<Micros>, to: Option<Micros>) -> Vec<AgentAudit> {
    let mut audit = Audit::new(from, to);
    audit.add(intervals);
    audit.finish()
}

/// [`audit`] fed a part at a time: a caller that makes intervals one DN after another keeps
/// only one DN's in memory (an audit of a day of 5 M events held them all: ~1 GB).
pub struct Audit {
    from: Option<Micros>,
    to: Option<Micros>,
    per_agent: BTreeMap<AgentId, AgentAudit>,
}

impl Audit {
    pub fn new(from: Option<Micros>, to: Option<Micros>) -> Audit {
        Audit {
            from,
            to,
            per_agent: BTreeMap::new(),
        }
    }

    /// Adds intervals, in any order and in as many calls as wanted.
    pub fn add(&mut self, intervals: &[Interval]) {
        for iv in intervals {
            let Some(id) = &iv.agent_id else { continue };
            let Some((start, end, login)) = clip(iv, self.from, self.to) else {
                continue;
            };
            match self.per_agent.get_mut(id) {
                Some(agent) => agent.add(iv, start, end, login),
                None => {
                    let mut agent = AgentAudit::new(id.clone());
                    agent.add(iv, start, end, login);
                    self.per_agent.insert(id.clone(), agent);
                }
            }
        }
    }

    /// One row per agent, by agent id.
    pub fn finish(self) -> Vec<AgentAudit> {
        self.per_agent
            .into_values()
            .map(AgentAudit::finish)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::snap;
    use crate::{intervals, AgentSnapshot};
    use ivrstate_model::WorkMode;

    fn day() -> Vec<AgentSnapshot> {
        use AgentStatus::*;
        vec![
            snap("7001", Some("1001"), LoggedIn, None, None, 0, 1),
            snap(
                "7001",
                Some("1001"),
                Ready,
                Some(WorkMode::ManualIn),
                None,
                1,
                2,
            ),
            snap(
                "7001",
                Some("1001"),
                NotReady,
                Some(WorkMode::AuxWork),
                Some("Break"),
                100,
                3,
            ),
            snap(
                "7001",
                Some("1001"),
                NotReady,
                Some(WorkMode::AfterCallWork),
                None,
                160,
                4,
            ),
            snap(
                "7001",
                Some("1001"),
                Ready,
                Some(WorkMode::ManualIn),
                None,
                200,
                5,
            ),
            snap("7001", Some("1001"), LoggedOut, None, None, 300, 6),
            snap("7001", Some("1001"), LoggedIn, None, None, 400, 7),
            snap(
                "7001",
                Some("1001"),
                Ready,
                Some(WorkMode::ManualIn),
                None,
                401,
                8,
            ),
            snap("7002", Some("1002"), LoggedIn, None, None, 50, 9),
            snap(
                "7002",
                Some("1002"),
                NotReady,
                Some(WorkMode::AuxWork),
                Some("Lunch"),
                50,
                10,
            ),
        ]
    }

    fn window(from: i64, to: i64) -> Vec<AgentAudit> {
        let (f, t) = (Some(Micros::from_secs(from)), Some(Micros::from_secs(to)));
        audit(&intervals(day(), f, t), f, t)
    }

    #[test]
    fn time_per_status_logins_and_not_ready_breakdown() {
        let a = window(0, 500);
        assert_eq!(
            a.iter().map(|x| x.agent_id.as_str()).collect::<Vec<_>>(),
            ["1001", "1002"]
        );
        let x = &a[0];
        assert_eq!(x.logins, 2);
        assert_eq!(
            x.status_s,
            StatusSeconds {
                logged_in: 2.0,
                ready: 99.0 + 100.0 + 99.0,
                not_ready: 100.0,
                logged_out: 100.0
            }
        );
        assert_eq!(x.not_ready_reason_s.get("Break"), Some(&60.0));
        assert_eq!(x.not_ready_reason_s.get(NONE_KEY), Some(&40.0));
        assert_eq!(x.not_ready_work_mode_s.get("AuxWork"), Some(&60.0));
        assert_eq!(x.not_ready_work_mode_s.get("AfterCallWork"), Some(&40.0));
        let y = &a[1];
        assert_eq!(
            (y.logins, y.status_s.not_ready, y.status_s.logged_in),
            (1, 450.0, 0.0)
        );
    }

    #[test]
    fn sums_equal_the_window_length_for_an_agent_present_throughout() {
        for (from, to) in [(0, 500), (50, 450), (99, 101), (150, 420), (300, 301)] {
            let a = window(from, to);
            let x = a.iter().find(|x| x.agent_id.as_str() == "1001").unwrap();
            assert_eq!(x.total_s, (to - from) as f64, "[{from}, {to})");
            assert_eq!(x.status_s.total(), x.total_s);
        }
    }

    #[test]
    fn a_login_before_the_window_is_not_counted_in_it() {
        let a = window(1, 399);
        assert_eq!(a[0].logins, 0);
        assert_eq!(window(0, 1)[0].logins, 1);
    }

    #[test]
    fn unclipped_intervals_are_clipped_by_audit_itself() {
        let all = intervals(day(), None, None);
        let (f, t) = (Some(Micros::from_secs(50)), Some(Micros::from_secs(450)));
        assert_eq!(audit(&all, f, t), audit(&intervals(day(), f, t), f, t));
    }

    #[test]
    fn intervals_without_an_agent_id_belong_to_nobody() {
        let mut t = day();
        for s in &mut t {
            s.agent_id = None;
        }
        assert!(audit(
            &intervals(t, None, Some(Micros::from_secs(500))),
            None,
            Some(Micros::from_secs(500))
        )
        .is_empty());
    }
}
