//! The agent-state rules (docs/design.md "Agent-state rules", docs/protocol.md section 4), one DN at a time.
//!
//! These functions see one DN's state and one event; they never look anything up, so the hot
//! path does one map lookup per event. They allocate only when a value actually changes (a new
//! reason or agent id) or an anomaly is recorded.
//!
//! - Login: LoggedIn (a transient status: the next Ready/NotReady follows). Login on a DN that is
//!   not LoggedOut is accepted and recorded as DoubleLogin.
//! - Ready / NotReady / AfterCallWork imply LoggedIn: on a LoggedOut DN they are accepted as
//!   logged in and recorded as StateWithoutLogin. They take the event's work mode and reason
//!   (`AgentEvent::reason`). AfterCallWork is NotReady with work mode AfterCallWork; a NotReady
//!   whose work mode is AfterCallWork or WalkAway keeps that work mode.
//! - Logout: LoggedOut, work mode and reason cleared, the agent id kept (so the LoggedOut interval
//!   still says whose logout it was). Logout of a LoggedOut DN is recorded as LogoutWithoutLogin.
//! - The agent id is the event's when it carries one, else the one already known.
//! - EventAddressInfo: its status, Unknown counting as LoggedOut. If it agrees with the state
//!   nothing changes; otherwise it wins (it is the switch's answer) and, for a DN already tracked,
//!   the disagreement is recorded (kind Other).
//! - An event older than the DN's last change is recorded as OutOfOrder and folded as if it
//!   happened at that last change, so intervals never have a negative length.
//! - A status change is published; a change of work mode, reason or agent id alone is not (the
//!   MonitorInfo vocabulary cannot say it) but still touches the entity for history.

use crate::change::{Applied, FoldAnomaly};
use crate::fold::At;
use crate::state::AgentState;
use ivrstate_model::{
    AddressInfo, AgentEvent, AgentEventKind, AgentStatus, AnomalyKind, CompactString, TServerName,
    WorkMode,
};

/// What a rule did to a DN.
pub(crate) struct Outcome {
    /// The entity's stored state changed (persist it).
    pub(crate) touched: bool,
    /// The published status changed to this (route it to the DN's ports).
    pub(crate) new_status: Option<AgentStatus>,
}

impl Outcome {
    /// The outcome for a DN seen for the first time: a new entity is always touched.
    pub(crate) fn fresh(mut self) -> Self {
        self.touched = true;
        self
    }
}

pub(crate) fn agent_event(
    a: &mut AgentState,
    at: At,
    ts: &TServerName,
    ev: &AgentEvent,
    out: &mut Applied,
) -> Outcome {
    let time = in_order(a, at, ts, &ev.dn, ev.kind.event_name(), out);
    let was = a.status;
    let logged_out = was == AgentStatus::LoggedOut;
    let (status, work_mode, reason) = match ev.kind {
        AgentEventKind::Login => {
            if !logged_out {
                record(out, at, AnomalyKind::DoubleLogin, ts, &ev.dn, || {
                    format!("EventAgentLogin while {was}")
                });
            }
            (AgentStatus::LoggedIn, ev.work_mode, None)
        }
        AgentEventKind::Logout => {
            if logged_out {
                record(out, at, AnomalyKind::LogoutWithoutLogin, ts, &ev.dn, || {
                    "EventAgentLogout while LoggedOut".into()
                });
            }
            (AgentStatus::LoggedOut, None, None)
        }
        AgentEventKind::Ready | AgentEventKind::NotReady | AgentEventKind::AfterCallWork => {
            if logged_out {
                record(out, at, AnomalyKind::StateWithoutLogin, ts, &ev.dn, || {
                    format!(
                        "{} without EventAgentLogin: accepted as logged in",
                        ev.kind.event_name()
                    )
                });
            }
            match ev.kind {
                AgentEventKind::Ready => (AgentStatus::Ready, ev.work_mode, ev.reason()),
                AgentEventKind::AfterCallWork => (
                    AgentStatus::NotReady,
                    Some(WorkMode::AfterCallWork),
                    ev.reason(),
                ),
                _ => (AgentStatus::NotReady, ev.work_mode, ev.reason()),
            }
        }
    };
    let mut touched = set(a, at, time, status, ev.agent_id.as_ref(), work_mode, reason);
    if ev.kind == AgentEventKind::Login {
        a.login_count = a.login_count.saturating_add(1);
        touched = true;
    }
    Outcome {
        touched,
        new_status: (status != was).then_some(status),
    }
}

pub(crate) fn address_info(
    a: &mut AgentState,
    fresh: bool,
    at: At,
    ts: &TServerName,
    info: &AddressInfo,
    out: &mut Applied,
) -> Outcome {
    let status = match info.status() {
        AgentStatus::Unknown => AgentStatus::LoggedOut,
        s => s,
    };
    let was = a.status;
    if status == was {
        return Outcome {
            touched: false,
            new_status: None,
        };
    }
    let time = in_order(a, at, ts, &info.dn, "EventAddressInfo", out);
    if !fresh {
        record(out, at, AnomalyKind::Other, ts, &info.dn, || {
            format!("EventAddressInfo says {status} while state is {was}")
        });
    }
    let (work_mode, reason) = match status {
        AgentStatus::LoggedOut => (None, None),
        _ => (
            info.work_mode,
            ivrstate_model::reason_of(&info.reasons, &info.extensions),
        ),
    };
    set(
        a,
        at,
        time,
        status,
        info.agent_id.as_ref(),
        work_mode,
        reason,
    );
    Outcome {
        touched: true,
        new_status: Some(status),
    }
}

/// The time to fold an event at: its own, or the DN's last change if it is older (recorded).
fn in_order(
    a: &AgentState,
    at: At,
    ts: &TServerName,
    dn: &ivrstate_model::Dn,
    what: &str,
    out: &mut Applied,
) -> ivrstate_model::Micros {
    if at.time >= a.since {
        return at.time;
    }
    record(out, at, AnomalyKind::OutOfOrder, ts, dn, || {
        format!(
            "{what} at {} is older than the DN's last change at {}",
            at.time, a.since
        )
    });
    a.since
}

/// Writes the new values; returns true if any of them differs. Allocates only for a value that
/// actually changed.
fn set(
    a: &mut AgentState,
    at: At,
    time: ivrstate_model::Micros,
    status: AgentStatus,
    agent_id: Option<&ivrstate_model::AgentId>,
    work_mode: Option<WorkMode>,
    reason: Option<&str>,
) -> bool {
    let id_changed = agent_id.is_some_and(|id| a.agent_id.as_ref() != Some(id));
    let reason_changed = a.reason.as_deref() != reason;
    if !(id_changed || reason_changed || a.status != status || a.work_mode != work_mode) {
        return false;
    }
    if id_changed {
        a.agent_id = agent_id.cloned();
    }
    if reason_changed {
        a.reason = reason.map(CompactString::from);
    }
    a.status = status;
    a.work_mode = work_mode;
    a.since = time;
    a.since_seq = at.seq;
    true
}

fn record(
    out: &mut Applied,
    at: At,
    kind: AnomalyKind,
    ts: &TServerName,
    dn: &ivrstate_model::Dn,
    detail: impl FnOnce() -> String,
) {
    out.anomalies.push(FoldAnomaly {
        seq: at.seq,
        kind,
        tserver: Some(ts.clone()),
        dn: Some(dn.clone()),
        detail: detail(),
    });
}
