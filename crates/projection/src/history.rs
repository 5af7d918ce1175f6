//! History arithmetic: from the agent-state transitions the engine persisted to the intervals of
//! `history --json` (docs/interface.md). Pure: the caller reads the transitions from its index.
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
/// Encoded for the engine's history chunks with bincode's derive (the bytes its serde path
/// wrote: stores derived before read unchanged).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn snap(
        dn: &str,
        agent: Option<&str>,
        status: AgentStatus,
        mode: Option<WorkMode>,
        reason: Option<&str>,
        start: i64,
        seq: Seq,
    ) -> AgentSnapshot {
        AgentSnapshot {
            agent_id: agent.map(AgentId::from),
            tserver: TServerName::from("TS"),
            dn: Dn::from(dn),
            status,
            work_mode: mode,
            reason: reason.map(str::to_owned),
            start: Micros::from_secs(start),
            start_seq: seq,
        }
    }

    fn session() -> Vec<AgentSnapshot> {
        use AgentStatus::*;
        vec![
            snap("7001", Some("1001"), LoggedIn, None, None, 10, 1),
            snap(
                "7001",
                Some("1001"),
                Ready,
                Some(WorkMode::ManualIn),
                None,
                12,
                2,
            ),
            // Persisted again with nothing new (e.g. a login_count change): starts nothing.
            snap(
                "7001",
                Some("1001"),
                Ready,
                Some(WorkMode::ManualIn),
                None,
                12,
                3,
            ),
            snap(
                "7001",
                Some("1001"),
                NotReady,
                Some(WorkMode::AuxWork),
                Some("Break"),
                20,
                4,
            ),
            snap("7001", Some("1001"), LoggedOut, None, None, 30, 5),
        ]
    }

    #[test]
    fn an_interval_runs_from_each_change_to_the_next_and_the_last_is_open() {
        let iv = intervals(session(), None, None);
        let got: Vec<_> = iv
            .iter()
            .map(|i| {
                (
                    i.status,
                    i.start.split().0,
                    i.end.map(|e| e.split().0),
                    i.duration_s,
                    i.start_seq,
                    i.end_seq,
                )
            })
            .collect();
        use AgentStatus::*;
        assert_eq!(
            got,
            vec![
                (LoggedIn, 10, Some(12), Some(2.0), 1, Some(2)),
                (Ready, 12, Some(20), Some(8.0), 2, Some(4)),
                (NotReady, 20, Some(30), Some(10.0), 4, Some(5)),
                (LoggedOut, 30, None, None, 5, None),
            ]
        );
        assert_eq!(iv[2].reason.as_deref(), Some("Break"));
        assert_eq!(iv[2].work_mode, Some(WorkMode::AuxWork));
    }

    #[test]
    fn a_change_of_work_mode_reason_or_agent_alone_starts_an_interval() {
        use AgentStatus::*;
        let t = vec![
            snap(
                "1",
                Some("A"),
                NotReady,
                Some(WorkMode::AuxWork),
                Some("Break"),
                0,
                1,
            ),
            snap(
                "1",
                Some("A"),
                NotReady,
                Some(WorkMode::AuxWork),
                Some("Lunch"),
                5,
                2,
            ),
            snap(
                "1",
                Some("A"),
                NotReady,
                Some(WorkMode::WalkAway),
                Some("Lunch"),
                6,
                3,
            ),
            snap(
                "1",
                Some("B"),
                NotReady,
                Some(WorkMode::WalkAway),
                Some("Lunch"),
                8,
                4,
            ),
        ];
        assert_eq!(intervals(t, None, None).len(), 4);
    }

    #[test]
    fn an_interval_crossing_midnight_is_one_interval() {
        let day = Micros::parse("2015-08-17T23:59:00Z").unwrap().split().0;
        use AgentStatus::*;
        let t = vec![
            snap(
                "7001",
                Some("1001"),
                Ready,
                Some(WorkMode::ManualIn),
                None,
                day,
                1,
            ),
            snap(
                "7001",
                Some("1001"),
                NotReady,
                Some(WorkMode::AfterCallWork),
                Some("Break"),
                day + 150,
                2,
            ),
        ];
        let iv = intervals(t, None, None);
        assert_eq!(iv.len(), 2);
        assert_eq!(iv[0].duration_s, Some(150.0));
        assert_eq!(
            iv[0].end.unwrap().to_rfc3339(),
            "2015-08-18T00:01:30.000000Z"
        );
        let json = serde_json_like(&iv[1]);
        assert_eq!(
            json,
            r#"{"agent_id":"1001","tserver":"TS","dn":"7001","status":"NotReady","work_mode":"AfterCallWork","reason":"Break","start":"2015-08-18T00:01:30.000000Z","end":null,"duration_s":null,"start_seq":2,"end_seq":null}"#
        );
    }

    /// The JSON of an interval as `history --json` prints it.
    fn serde_json_like(iv: &Interval) -> String {
        serde_json::to_string(iv).unwrap()
    }

    #[test]
    fn from_and_to_clip_start_and_end_and_drop_what_is_outside() {
        let iv = intervals(
            session(),
            Some(Micros::from_secs(15)),
            Some(Micros::from_secs(25)),
        );
        let got: Vec<_> = iv
            .iter()
            .map(|i| {
                (
                    i.status,
                    i.start.split().0,
                    i.end.map(|e| e.split().0),
                    i.duration_s,
                )
            })
            .collect();
        use AgentStatus::*;
        assert_eq!(
            got,
            vec![
                (Ready, 15, Some(20), Some(5.0)),
                (NotReady, 20, Some(25), Some(5.0))
            ]
        );
        // The seqs stay those of the real transitions.
        assert_eq!((iv[0].start_seq, iv[1].end_seq), (2, Some(5)));
        assert_eq!(iv[0].unclipped_start, Micros::from_secs(12));
    }

    #[test]
    fn the_open_interval_lasts_until_to_when_given() {
        let iv = intervals(
            session(),
            Some(Micros::from_secs(35)),
            Some(Micros::from_secs(40)),
        );
        assert_eq!(iv.len(), 1);
        assert_eq!(
            (iv[0].status, iv[0].start, iv[0].end, iv[0].duration_s),
            (
                AgentStatus::LoggedOut,
                Micros::from_secs(35),
                None,
                Some(5.0)
            )
        );
        let iv = intervals(session(), Some(Micros::from_secs(35)), None);
        assert_eq!(iv[0].duration_s, None);
        assert!(intervals(session(), None, Some(Micros::from_secs(10))).is_empty());
        assert!(intervals(
            session(),
            Some(Micros::from_secs(5)),
            Some(Micros::from_secs(9))
        )
        .is_empty());
    }

    #[test]
    fn each_dn_is_ended_by_its_own_next_transition() {
        use AgentStatus::*;
        let t = vec![
            snap("1", Some("A"), Ready, None, None, 0, 1),
            snap("2", Some("B"), Ready, None, None, 1, 2),
            snap("1", Some("A"), NotReady, None, None, 5, 3),
            snap("2", Some("B"), LoggedOut, None, None, 9, 4),
        ];
        let got: Vec<_> = intervals(t, None, None)
            .iter()
            .map(|i| {
                (
                    i.dn.to_string(),
                    i.start.split().0,
                    i.end.map(|e| e.split().0),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("1".into(), 0, Some(5)),
                ("2".into(), 1, Some(9)),
                ("1".into(), 5, None),
                ("2".into(), 9, None)
            ]
        );
    }
}
