//! Interval and session reports (`audit --interval`, `audit --sessions`): the audit arithmetic of
//! `audit.rs` cut into wall-clock intervals of a time zone, and agent time per login session (the
//! shape of Genesys Interaction Concentrator's `G_LOGIN_SESSION`). Pure: the zone is a value
//! ([`jiff::tz::TimeZone`], a fixed offset or a named zone's rules), nothing is read from disk.
//!
//! Intervals are aligned in the zone: 15-minute intervals start at :00, :15, :30 and :45 local
//! time, days at local midnight. Across a DST change an hour is missing or repeated, so a day has
//! 23 or 25 hours (its row says so in `note`), and a repeated hour has its 15-minute intervals
//! twice (they are distinct instants). An interval report adds up to the plain audit of the same
//! window: every second and every login falls in exactly one interval (the property test
//! `interval_sums_equal_the_audit_of_the_window`).

use crate::audit::{clip, AgentAudit};
use crate::history::{seconds, Interval};
use ivrstate_model::{AgentId, AgentStatus, Dn, Micros, TServerName, WorkMode};
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Span, Timestamp};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The length of the intervals of a report.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Step {
    /// 15, 30 or 60 minutes (a divisor of an hour or the hour).
    Minutes(u8),
    /// A local calendar day (23, 24 or 25 hours).
    Day,
}

impl Step {
    fn nominal_secs(self) -> i64 {
        match self {
            Step::Minutes(m) => i64::from(m) * 60,
            Step::Day => 86_400,
        }
    }
}

impl FromStr for Step {
    type Err = String;

    fn from_str(s: &str) -> Result<Step, String> {
        match s {
            "15m" => Ok(Step::Minutes(15)),
            "30m" => Ok(Step::Minutes(30)),
            "1h" | "60m" => Ok(Step::Minutes(60)),
            "1d" | "24h" => Ok(Step::Day),
            _ => Err(format!(
                "invalid interval {s:?}: expected 15m, 30m, 1h or 1d"
            )),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Minutes(60) => f.write_str("1h"),
            Step::Minutes(m) => write!(f, "{m}m"),
            Step::Day => f.write_str("1d"),
        }
    }
}

/// One interval of a report: `[start, end)`, aligned in the report's zone.
#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct Bucket {
    pub start: Micros,
    pub end: Micros,
    /// Set when the interval is not its nominal length (a day across a DST change).
    pub note: Option<String>,
}

fn timestamp(t: Micros) -> Option<Timestamp> {
    Timestamp::from_microsecond(t.0).ok()
}

/// The instants at which the wall clock of `tz` shows `dt`: none in a gap (spring forward), two
/// in a fold (fall back).
fn instants(tz: &TimeZone, dt: DateTime) -> Vec<Micros> {
    let at = |offset: jiff::tz::Offset| offset.to_timestamp(dt).ok();
    let found = match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => vec![at(offset)],
        AmbiguousOffset::Gap { .. } => vec![],
        AmbiguousOffset::Fold { before, after } => vec![at(before), at(after)],
    };
    found
        .into_iter()
        .flatten()
        .map(|t| Micros(t.as_microsecond()))
        .collect()
}

/// The intervals of `step` in `tz` that cover `[from, to)`: the first starts at or before `from`,
/// the last ends at or after `to`. Empty when `to <= from`.
pub fn buckets(from: Micros, to: Micros, step: Step, tz: &TimeZone) -> Vec<Bucket> {
    let (Some(first), Some(_)) = (timestamp(from), timestamp(to)) else {
        return Vec::new();
    };
    if to <= from {
        return Vec::new();
    }
    // Walk the wall clock from the aligned local time at or before `from`, one hour earlier
    // still so that an interval starting in a repeated hour is not missed; collect the instants
    // each aligned wall-clock time names. Instants sort the fold's two hours correctly.
    let local = tz.to_datetime(first);
    let (start, span) = match step {
        Step::Minutes(m) => {
            let minute = local.minute() - local.minute() % m as i8;
            let aligned = local
                .with()
                .minute(minute)
                .second(0)
                .subsec_nanosecond(0)
                .build()
                .unwrap_or(local);
            (
                aligned.checked_sub(Span::new().hours(1)).unwrap_or(aligned),
                Span::new().minutes(i64::from(m)),
            )
        }
        Step::Day => {
            let midnight = local.date().to_datetime(jiff::civil::Time::midnight());
            (
                midnight
                    .checked_sub(Span::new().days(1))
                    .unwrap_or(midnight),
                Span::new().days(1),
            )
        }
    };
    let mut starts: Vec<Micros> = Vec::new();
    let mut dt = start;
    loop {
        let found = match step {
            // A day starts at its first instant even when midnight falls in a gap.
            Step::Day => tz
                .to_ambiguous_timestamp(dt)
                .compatible()
                .ok()
                .map(|t| vec![Micros(t.as_microsecond())])
                .unwrap_or_default(),
            Step::Minutes(_) => instants(tz, dt),
        };
        let past_end = found.iter().any(|t| *t >= to);
        starts.extend(found);
        if past_end {
            break;
        }
        match dt.checked_add(span) {
            Ok(next) => dt = next,
            Err(_) => break,
        }
    }
    starts.sort();
    starts.dedup();
    // Keep the last start at or before `from` and every start after it, up to the first at or
    // after `to`, which only ends the previous interval.
    let first_index = starts.partition_point(|t| *t <= from).saturating_sub(1);
    let kept = starts.get(first_index..).unwrap_or_default();
    kept.windows(2)
        .map(|pair| {
            let (start, end) = (pair[0], pair[1]);
            let secs = (end.0 - start.0) / 1_000_000;
            let note = (step == Step::Day && secs != step.nominal_secs()).then(|| {
                format!(
                    "{}-hour day (clock change)",
                    (secs as f64 / 3600.0).round() as i64
                )
            });
            Bucket { start, end, note }
        })
        .take_while(|b| b.start < to)
        .collect()
}

/// One agent in one interval. JSON: the interval, then the fields of `audit --json` for the part
/// of the interval inside the window, then the logged-in and after-call-work totals.
#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct IntervalRow {
    pub interval_start: Micros,
    pub interval_end: Micros,
    /// Set when the interval is not its nominal length (a day across a DST change).
    pub note: Option<String>,
    #[serde(flatten)]
    pub audit: AgentAudit,
    /// Seconds logged in: LoggedIn, Ready and NotReady together.
    pub logged_in_s: f64,
    /// The NotReady seconds in after-call work (also inside `status_s.NotReady`).
    pub after_call_work_s: f64,
}

impl IntervalRow {
    /// NotReady seconds other than after-call work.
    pub fn not_ready_other_s(&self) -> f64 {
        self.audit.status_s.not_ready - self.after_call_work_s
    }
}

/// The NotReady work-mode key of after-call work.
fn after_call_work_key() -> String {
    WorkMode::AfterCallWork.name()
}

/// Adds up `intervals` over `[from, to)` per agent per bucket (`buckets` as built by
/// [`buckets`] for the same window), sorted by agent id then time. A row exists where the agent
/// has an interval; the part of an interval in each bucket counts there, a login in the bucket
/// where it happened.
pub fn interval_report(
    intervals: &[Interval],
    from: Micros,
    to: Micros,
    buckets: &[Bucket],
) -> Vec<IntervalRow> {
    let mut rows: BTreeMap<(&AgentId, usize), AgentAudit> = BTreeMap::new();
    for iv in intervals {
        let Some(id) = &iv.agent_id else { continue };
        let Some((start, end, mut login)) = clip(iv, Some(from), Some(to)) else {
            continue;
        };
        let mut index = buckets.partition_point(|b| b.end <= start);
        while let Some(bucket) = buckets.get(index) {
            let (s, e) = (start.max(bucket.start), end.min(bucket.end));
            if e < s || (s == e && s > start) {
                break;
            }
            rows.entry((id, index))
                .or_insert_with(|| AgentAudit::new(id.clone()))
                .add(iv, s, e, login);
            login = false;
            if e >= end {
                break;
            }
            index += 1;
        }
    }
    let acw = after_call_work_key();
    rows.into_iter()
        .filter_map(|((_, index), audit)| {
            let bucket = buckets.get(index)?;
            let audit = audit.finish();
            Some(IntervalRow {
                interval_start: bucket.start,
                interval_end: bucket.end,
                note: bucket.note.clone(),
                logged_in_s: audit.total_s - audit.status_s.logged_out,
                after_call_work_s: audit
                    .not_ready_work_mode_s
                    .get(&acw)
                    .copied()
                    .unwrap_or(0.0),
                audit,
            })
        })
        .collect()
}

/// One login session of one agent on one DN (`G_LOGIN_SESSION`). JSON field order is the
/// contract of `audit --sessions --json`.
#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct LoginSession {
    pub agent_id: AgentId,
    pub tserver: TServerName,
    pub dn: Dn,
    /// When the session started: the login, or the first state of a session without one.
    pub login: Micros,
    /// When it ended: the logout, or another agent taking the DN; None while still open.
    pub logout: Option<Micros>,
    /// From login to logout, or to the end of the window for an open session.
    pub duration_s: f64,
    /// Seconds Ready within the session (up to the end of the window for an open one).
    pub ready_s: f64,
    /// Seconds NotReady within the session, after-call work included.
    pub not_ready_s: f64,
    /// The NotReady seconds in after-call work.
    pub after_call_work_s: f64,
}

/// The login sessions that overlap `[from, to)`, from the UNCLIPPED intervals of every DN up to
/// `to` (a session that began before `from` keeps its real login time). A session is a run of
/// one DN's intervals with the same agent id and a status other than LoggedOut. Sorted by login,
/// then agent.
pub fn sessions(intervals: &[Interval], from: Option<Micros>, to: Micros) -> Vec<LoginSession> {
    let mut per_dn: BTreeMap<(&TServerName, &Dn), Vec<&Interval>> = BTreeMap::new();
    for iv in intervals {
        per_dn.entry((&iv.tserver, &iv.dn)).or_default().push(iv);
    }
    let acw = Some(WorkMode::AfterCallWork);
    let mut out: Vec<LoginSession> = Vec::new();
    for ((tserver, dn), mut ivs) in per_dn {
        ivs.sort_by_key(|i| (i.start, i.start_seq));
        let mut open: Option<LoginSession> = None;
        for iv in ivs {
            let agent = iv
                .agent_id
                .as_ref()
                .filter(|_| iv.status != AgentStatus::LoggedOut);
            let continues = match (&open, agent) {
                (Some(s), Some(a)) => s.agent_id == *a,
                _ => false,
            };
            if !continues {
                if let Some(mut s) = open.take() {
                    s.logout = Some(iv.start);
                    out.push(s);
                }
                if let Some(a) = agent {
                    open = Some(LoginSession {
                        agent_id: a.clone(),
                        tserver: tserver.clone(),
                        dn: dn.clone(),
                        login: iv.unclipped_start,
                        logout: None,
                        duration_s: 0.0,
                        ready_s: 0.0,
                        not_ready_s: 0.0,
                        after_call_work_s: 0.0,
                    });
                }
            }
            if let Some(s) = open.as_mut() {
                let end = iv.end.unwrap_or(to).min(to);
                let secs = seconds(iv.start, end);
                match iv.status {
                    AgentStatus::Ready => s.ready_s += secs,
                    AgentStatus::NotReady => {
                        s.not_ready_s += secs;
                        if iv.work_mode == acw {
                            s.after_call_work_s += secs;
                        }
                    }
                    _ => {}
                }
            }
        }
        out.extend(open);
    }
    let lo = from.unwrap_or(Micros::MIN);
    out.retain(|s| s.login < to && s.logout.is_none_or(|l| l > lo || (l == s.login && l >= lo)));
    for s in &mut out {
        s.duration_s = seconds(s.login, s.logout.unwrap_or(to).min(to));
    }
    out.sort_by(|a, b| (a.login, &a.agent_id).cmp(&(b.login, &b.agent_id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{audit, intervals, AgentSnapshot};
    use ivrstate_model::Seq;
    use proptest::prelude::*;

    fn t(s: &str) -> Micros {
        Micros::parse(s).unwrap()
    }

    fn paris() -> TimeZone {
        // The rules of Europe/Paris, without needing a tz database on the machine.
        TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap()
    }

    fn starts(b: &[Bucket]) -> Vec<String> {
        b.iter().map(|b| b.start.to_rfc3339()).collect()
    }

    #[test]
    fn steps_parse_and_print() {
        for s in ["15m", "30m", "1h", "1d"] {
            assert_eq!(s.parse::<Step>().unwrap().to_string(), s);
        }
        assert!("7m"
            .parse::<Step>()
            .unwrap_err()
            .contains("15m, 30m, 1h or 1d"));
    }

    #[test]
    fn quarter_hours_are_aligned_and_cover_the_window() {
        let b = buckets(
            t("2026-01-05T10:07:00Z"),
            t("2026-01-05T10:46:00Z"),
            Step::Minutes(15),
            &TimeZone::UTC,
        );
        assert_eq!(
            starts(&b),
            [
                "2026-01-05T10:00:00.000000Z",
                "2026-01-05T10:15:00.000000Z",
                "2026-01-05T10:30:00.000000Z",
                "2026-01-05T10:45:00.000000Z"
            ]
        );
        assert_eq!(b[3].end, t("2026-01-05T11:00:00Z"));
    }

    #[test]
    fn hours_and_days_are_aligned_in_a_fixed_offset() {
        let plus530 = TimeZone::fixed(jiff::tz::Offset::from_seconds(5 * 3600 + 1800).unwrap());
        let b = buckets(
            t("2026-01-05T10:07:00Z"),
            t("2026-01-05T11:00:00Z"),
            Step::Minutes(60),
            &plus530,
        );
        // 15:30 local is 10:00Z; the hour starts at 15:00 local = 09:30Z.
        assert_eq!(
            starts(&b),
            ["2026-01-05T09:30:00.000000Z", "2026-01-05T10:30:00.000000Z"]
        );
        let d = buckets(
            t("2026-01-05T10:00:00Z"),
            t("2026-01-06T10:00:00Z"),
            Step::Day,
            &plus530,
        );
        assert_eq!(
            starts(&d),
            ["2026-01-04T18:30:00.000000Z", "2026-01-05T18:30:00.000000Z"]
        );
        assert!(d.iter().all(|b| b.note.is_none()));
    }

    #[test]
    fn a_day_across_a_dst_change_has_23_or_25_hours_and_says_so() {
        let spring = buckets(
            t("2026-03-29T00:00:00+01:00"),
            t("2026-03-30T00:00:00+02:00"),
            Step::Day,
            &paris(),
        );
        assert_eq!(spring.len(), 1);
        assert_eq!((spring[0].end.0 - spring[0].start.0) / 3_600_000_000, 23);
        assert_eq!(
            spring[0].note.as_deref(),
            Some("23-hour day (clock change)")
        );
        let autumn = buckets(
            t("2026-10-25T00:00:00+02:00"),
            t("2026-10-26T00:00:00+01:00"),
            Step::Day,
            &paris(),
        );
        assert_eq!(autumn.len(), 1);
        assert_eq!(
            autumn[0].note.as_deref(),
            Some("25-hour day (clock change)")
        );
        // The repeated hour has its quarters twice, the missing one none: 92 and 100 of them.
        let q = |from, to| buckets(t(from), t(to), Step::Minutes(15), &paris()).len();
        assert_eq!(
            q("2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00"),
            92
        );
        assert_eq!(
            q("2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00"),
            100
        );
    }

    /// A state of agent `agent` on DN `dn` (NotReady for reason "Break").
    fn snap(
        dn: &str,
        agent: &str,
        status: AgentStatus,
        mode: Option<WorkMode>,
        start: i64,
        seq: Seq,
    ) -> AgentSnapshot {
        let reason = (status == AgentStatus::NotReady).then_some("Break");
        crate::history::tests::snap(dn, Some(agent), status, mode, reason, start, seq)
    }

    #[test]
    fn an_interval_report_splits_time_at_the_boundaries_and_counts_logins_where_they_happen() {
        use AgentStatus::*;
        let day = vec![
            snap("7001", "1001", LoggedIn, None, 800, 1),
            snap("7001", "1001", Ready, Some(WorkMode::ManualIn), 850, 2),
            snap(
                "7001",
                "1001",
                NotReady,
                Some(WorkMode::AfterCallWork),
                1000,
                3,
            ),
            snap("7001", "1001", LoggedOut, None, 2000, 4),
        ];
        let (from, to) = (Micros::from_secs(0), Micros::from_secs(2700));
        let b = buckets(from, to, Step::Minutes(15), &TimeZone::UTC);
        assert_eq!(b.len(), 3);
        let rows = interval_report(&intervals(day, Some(from), Some(to)), from, to, &b);
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.interval_start.split().0,
                    r.audit.logins,
                    r.logged_in_s,
                    r.audit.status_s.ready,
                    r.after_call_work_s,
                    r.audit.status_s.logged_out,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 1, 100.0, 50.0, 0.0, 0.0),
                (900, 0, 900.0, 100.0, 800.0, 0.0),
                (1800, 0, 200.0, 0.0, 200.0, 700.0),
            ]
        );
    }

    #[test]
    fn sessions_run_from_login_to_logout_per_dn() {
        use AgentStatus::*;
        let day = vec![
            snap("7001", "1001", LoggedIn, None, 100, 1),
            snap("7001", "1001", Ready, Some(WorkMode::ManualIn), 110, 2),
            snap(
                "7001",
                "1001",
                NotReady,
                Some(WorkMode::AfterCallWork),
                200,
                3,
            ),
            snap("7001", "1001", LoggedOut, None, 260, 4),
            snap("7001", "1001", LoggedIn, None, 400, 5),
            snap("7001", "1001", Ready, Some(WorkMode::ManualIn), 400, 6),
            snap("7002", "1002", Ready, Some(WorkMode::ManualIn), 50, 7),
        ];
        let to = Micros::from_secs(500);
        let s = sessions(&intervals(day.clone(), None, Some(to)), None, to);
        let got: Vec<_> = s
            .iter()
            .map(|s| {
                (
                    s.agent_id.to_string(),
                    s.login.split().0,
                    s.logout.map(|l| l.split().0),
                    s.duration_s,
                    s.ready_s,
                    s.not_ready_s,
                    s.after_call_work_s,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("1002".into(), 50, None, 450.0, 450.0, 0.0, 0.0),
                ("1001".into(), 100, Some(260), 160.0, 90.0, 60.0, 60.0),
                ("1001".into(), 400, None, 100.0, 100.0, 0.0, 0.0),
            ]
        );
        // A window after the first session leaves it out; one inside it keeps its real login.
        let later = sessions(
            &intervals(day.clone(), None, Some(to)),
            Some(Micros::from_secs(300)),
            to,
        );
        assert_eq!(later.len(), 2);
        let inside = sessions(
            &intervals(day, None, Some(Micros::from_secs(150))),
            Some(Micros::from_secs(120)),
            Micros::from_secs(150),
        );
        assert_eq!(
            inside.iter().map(|s| s.login.split().0).collect::<Vec<_>>(),
            [50, 100]
        );
    }

    fn arb_day() -> impl Strategy<Value = Vec<AgentSnapshot>> {
        let status = prop_oneof![
            Just(AgentStatus::LoggedIn),
            Just(AgentStatus::Ready),
            Just(AgentStatus::NotReady),
            Just(AgentStatus::LoggedOut),
        ];
        let mode = prop_oneof![
            Just(None),
            Just(Some(WorkMode::AfterCallWork)),
            Just(Some(WorkMode::AuxWork)),
        ];
        prop::collection::vec((0..3u8, 0..3u8, status, mode, 0..20_000i64), 1..60).prop_map(
            |events| {
                let mut by_dn: BTreeMap<u8, i64> = BTreeMap::new();
                events
                    .into_iter()
                    .enumerate()
                    .map(|(i, (dn, agent, status, mode, gap))| {
                        // Each DN's times increase (the fold keeps them monotonic).
                        let time = by_dn.entry(dn).or_insert(0);
                        *time += gap;
                        let mut s = snap(
                            &format!("70{dn}"),
                            &format!("10{agent}"),
                            status,
                            mode,
                            *time,
                            i as Seq + 1,
                        );
                        s.reason = mode.map(|_| format!("r{agent}"));
                        s
                    })
                    .collect()
            },
        )
    }

    proptest! {
        #[test]
        fn interval_sums_equal_the_audit_of_the_window(
            day in arb_day(),
            from in 0..100_000i64,
            len in 0..200_000i64,
            step in prop_oneof![Just(Step::Minutes(15)), Just(Step::Minutes(30)), Just(Step::Minutes(60)), Just(Step::Day)],
            zone in prop_oneof![Just(TimeZone::UTC), Just(paris()), Just(TimeZone::fixed(jiff::tz::Offset::from_seconds(-(3 * 3600 + 1800)).unwrap()))],
            clipped in any::<bool>(),
        ) {
            // Around the Paris spring change, so that zones with gaps are exercised too.
            let base = t("2026-03-28T20:00:00Z").split().0;
            let day: Vec<_> = day.into_iter().map(|mut s| { s.start = Micros::from_secs(base + s.start.split().0); s }).collect();
            let (from, to) = (Micros::from_secs(base + from), Micros::from_secs(base + from + len));
            let ivs = if clipped { intervals(day, Some(from), Some(to)) } else { intervals(day, None, None) };
            let plain = audit(&ivs, Some(from), Some(to));
            let b = buckets(from, to, step, &zone);
            for pair in b.windows(2) {
                prop_assert_eq!(pair[0].end, pair[1].start);
            }
            let rows = interval_report(&ivs, from, to, &b);
            let mut summed: BTreeMap<AgentId, AgentAudit> = BTreeMap::new();
            for r in &rows {
                prop_assert!(r.interval_start < to && r.interval_end > from || r.interval_start == from);
                let a = summed.entry(r.audit.agent_id.clone()).or_insert_with(|| AgentAudit::new(r.audit.agent_id.clone()));
                a.logins += r.audit.logins;
                a.status_s.logged_in += r.audit.status_s.logged_in;
                a.status_s.ready += r.audit.status_s.ready;
                a.status_s.not_ready += r.audit.status_s.not_ready;
                a.status_s.logged_out += r.audit.status_s.logged_out;
                for (k, v) in &r.audit.not_ready_reason_s { *a.not_ready_reason_s.entry(k.clone()).or_default() += v; }
                for (k, v) in &r.audit.not_ready_work_mode_s { *a.not_ready_work_mode_s.entry(k.clone()).or_default() += v; }
            }
            let summed: Vec<AgentAudit> = summed.into_values().map(AgentAudit::finish).collect();
            prop_assert_eq!(summed.len(), plain.len());
            let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
            for (s, p) in summed.iter().zip(&plain) {
                prop_assert_eq!(&s.agent_id, &p.agent_id);
                prop_assert_eq!(s.logins, p.logins);
                prop_assert!(close(s.total_s, p.total_s), "{} vs {}", s.total_s, p.total_s);
                prop_assert!(close(s.status_s.ready, p.status_s.ready));
                prop_assert!(close(s.status_s.not_ready, p.status_s.not_ready));
                prop_assert!(close(s.status_s.logged_in, p.status_s.logged_in));
                prop_assert!(close(s.status_s.logged_out, p.status_s.logged_out));
                prop_assert_eq!(s.not_ready_reason_s.keys().collect::<Vec<_>>(), p.not_ready_reason_s.keys().collect::<Vec<_>>());
                for (k, v) in &p.not_ready_reason_s { prop_assert!(close(s.not_ready_reason_s[k], *v)); }
                for (k, v) in &p.not_ready_work_mode_s { prop_assert!(close(s.not_ready_work_mode_s[k], *v)); }
            }
        }
    }
}
