//! The `status` view (docs/interface.md `status --json`), built the same way from the live state and
//! from per-entity history, so that `status` and `status --at <now>` cannot disagree.

use ivrstate_model::{AgentStatus, Availability, IvrName, Micros, PortNum, Seq, TServerName};
use ivrstate_projection::{AgentSnapshot, PortState, ServerState, State};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusView {
    pub seq: Seq,
    /// The `--at` time when given, else the newest event time folded (never the wall clock).
    pub at: Option<Micros>,
    pub servers: Vec<ServerView>,
    pub ports: Vec<PortView>,
    pub agents: Vec<AgentView>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerView {
    pub name: String,
    pub switch: Option<String>,
    pub status: Availability,
    pub since: Micros,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortView {
    pub ivr: String,
    pub port: String,
    pub tserver: String,
    pub dn: String,
    pub status: Availability,
    pub agent_status: AgentStatus,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentView {
    pub tserver: String,
    pub dn: String,
    pub agent_id: Option<String>,
    pub status: AgentStatus,
    pub work_mode: Option<String>,
    pub reason: Option<String>,
    pub since: Micros,
}

pub(crate) fn server(name: &TServerName, s: &ServerState) -> ServerView {
    ServerView {
        name: name.to_string(),
        switch: s.switch.clone(),
        status: s.status,
        since: s.since,
    }
}

/// A port without its agent status (filled in by [`from_parts`] from the agents at the same moment).
pub(crate) fn port(ivr: &IvrName, port: &PortNum, p: &PortState) -> PortView {
    PortView {
        ivr: ivr.to_string(),
        port: port.to_string(),
        tserver: p.tserver.to_string(),
        dn: p.dn.to_string(),
        status: p.status,
        agent_status: AgentStatus::LoggedOut,
    }
}

pub(crate) fn agent(a: &AgentSnapshot) -> AgentView {
    AgentView {
        tserver: a.tserver.to_string(),
        dn: a.dn.to_string(),
        agent_id: a.agent_id.as_ref().map(ToString::to_string),
        status: a.status,
        work_mode: a.work_mode.map(|m| m.name()),
        reason: a.reason.as_deref().map(str::to_owned),
        since: a.start,
    }
}

pub(crate) fn from_state(state: &State, at: Option<Micros>) -> StatusView {
    let agents = state
        .agents()
        .filter_map(|(ts, dn, _)| state.agent_snapshot(ts.as_str(), dn.as_str()))
        .map(|a| agent(&a))
        .collect();
    from_parts(
        state.last_seq(),
        at.or(state.last_time()),
        state.servers().map(|(n, s)| server(n, s)).collect(),
        state.ports().map(|(i, p, s)| port(i, p, s)).collect(),
        agents,
    )
}

pub(crate) fn from_parts(
    seq: Seq,
    at: Option<Micros>,
    mut servers: Vec<ServerView>,
    mut ports: Vec<PortView>,
    mut agents: Vec<AgentView>,
) -> StatusView {
    let agent_status: BTreeMap<(&str, &str), AgentStatus> = agents
        .iter()
        .map(|a| ((a.tserver.as_str(), a.dn.as_str()), a.status))
        .collect();
    for p in &mut ports {
        // A DN that never reported an agent event has nobody logged in.
        p.agent_status = agent_status
            .get(&(p.tserver.as_str(), p.dn.as_str()))
            .copied()
            .unwrap_or(AgentStatus::LoggedOut);
    }
    servers.sort_by(|a, b| a.name.cmp(&b.name));
    ports.sort_by(|a, b| (&a.ivr, &a.port).cmp(&(&b.ivr, &b.port)));
    agents.sort_by(|a, b| (&a.tserver, &a.dn).cmp(&(&b.tserver, &b.dn)));
    StatusView {
        seq,
        at,
        servers,
        ports,
        agents,
    }
}
