//! The folded state and its read side: sorted views and the queries the publisher and the CLI
//! ask. The write side (the rules) is in `fold.rs`.
//!
//! Every map is a `BTreeMap` so that views come out sorted by their identifying fields and the
//! snapshot bytes of equal states are equal (docs/design.md invariant 1: rebuilt == stored, byte for
//! byte). Maps are nested by the first id (`TServerName`, `IvrName`) rather than keyed by tuples
//! so that the hot path looks entries up with borrowed `&str` keys, without building owned keys.
//! The DN tables, the hot path, are hash maps that iterate and serialize sorted (`table.rs`).

use crate::change::MonitorInfo;
use crate::history::AgentSnapshot;
use crate::table::SortedHashMap;
use ivrstate_model::{
    AgentId, AgentStatus, Availability, CompactString, Dn, IvrConfig, IvrName, Micros, PortConfig,
    PortNum, Seq, TServerName, WorkMode,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The configuration as folded from `ConfigEvent`s.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Config {
    /// `[server] version`: the IServerVer of LoginResp.
    pub version: Option<String>,
    /// Configured T-Servers and their switch.
    pub tservers: BTreeMap<TServerName, TServerConfig>,
    pub ivrs: BTreeMap<IvrName, IvrConfig>,
    /// Configured ports, per IVR then PortNum.
    pub ports: BTreeMap<IvrName, BTreeMap<PortNum, PortConfig>>,
}

#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct TServerConfig {
    pub switch: Option<String>,
}

impl Config {
    pub fn port(&self, ivr: &str, port: &str) -> Option<&PortConfig> {
        self.ports.get(ivr)?.get(port)
    }
}

/// A T-Server as the IVRs see it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ServerState {
    pub status: Availability,
    pub switch: Option<String>,
    /// Event time of the last change.
    pub since: Micros,
    /// Seq of the record that made the last change.
    pub seq: Seq,
    /// True while the T-Server is in the configuration (false: seen only in T-Library events,
    /// or removed from the configuration).
    pub configured: bool,
}

/// An IVR port. Kept after its configuration is removed (as Unavailable) so that status shows it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PortState {
    pub status: Availability,
    pub dn: Dn,
    pub tserver: TServerName,
    pub since: Micros,
    pub seq: Seq,
}

/// The agent state of one DN on one T-Server. `status` is never `Unknown`: Unknown counts as
/// LoggedOut for state and history (docs/design.md "Agent-state rules").
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AgentState {
    pub status: AgentStatus,
    pub agent_id: Option<AgentId>,
    pub work_mode: Option<WorkMode>,
    /// An inline small string (as ids are): a rebuild changes it at most NotReady events, and
    /// an allocation each time was a measurable share of the fold.
    pub reason: Option<CompactString>,
    /// Event time at which (status, agent_id, work_mode, reason) took their current values.
    pub since: Micros,
    pub since_seq: Seq,
    /// EventAgentLogin events folded on this DN.
    pub login_count: u64,
}

impl AgentState {
    pub(crate) fn logged_out(since: Micros, seq: Seq) -> Self {
        AgentState {
            status: AgentStatus::LoggedOut,
            agent_id: None,
            work_mode: None,
            reason: None,
            since,
            since_seq: seq,
            login_count: 0,
        }
    }
}

/// Where a port points: used to route an agent change to the ports that show that DN.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub(crate) struct PortRef {
    pub(crate) ivr: IvrName,
    pub(crate) port: PortNum,
}

/// Everything about one (T-Server, DN) in one place, so that an agent event is folded and
/// routed with a single lookup.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub(crate) struct DnSlot {
    /// None until a T-Library event names the DN (a DN known only from a port's configuration
    /// is not an agent yet).
    pub(crate) agent: Option<AgentState>,
    /// The configured ports that show this DN, sorted by (IVR, port): the reverse of
    /// `config.ports`, kept (and snapshotted) with the DN.
    pub(crate) ports: Vec<PortRef>,
}

/// The whole folded state at `last_seq`.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub(crate) config: Config,
    pub(crate) servers: BTreeMap<TServerName, ServerState>,
    pub(crate) ports: BTreeMap<IvrName, BTreeMap<PortNum, PortState>>,
    pub(crate) dns: BTreeMap<TServerName, SortedHashMap<Dn, DnSlot>>,
    pub(crate) last_seq: Seq,
    pub(crate) last_time: Option<Micros>,
}

impl State {
    pub fn new() -> Self {
        Self::default()
    }

    /// Seq of the last record folded (0: none).
    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// The largest event time folded (not the wall clock): `status`'s `at` when none is given.
    pub fn last_time(&self) -> Option<Micros> {
        self.last_time
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every T-Server configured or seen in the log, sorted by name.
    pub fn servers(&self) -> impl Iterator<Item = (&TServerName, &ServerState)> {
        self.servers.iter()
    }

    /// Every port configured now or before, sorted by (IVR, PortNum).
    pub fn ports(&self) -> impl Iterator<Item = (&IvrName, &PortNum, &PortState)> {
        self.ports
            .iter()
            .flat_map(|(ivr, ps)| ps.iter().map(move |(p, s)| (ivr, p, s)))
    }

    /// Every DN seen in T-Library agent or address events, sorted by (T-Server, DN).
    pub fn agents(&self) -> impl Iterator<Item = (&TServerName, &Dn, &AgentState)> {
        self.dns.iter().flat_map(|(ts, ds)| {
            ds.sorted()
                .into_iter()
                .filter_map(move |(d, slot)| slot.agent.as_ref().map(|a| (ts, d, a)))
        })
    }

    pub fn server(&self, name: &str) -> Option<&ServerState> {
        self.servers.get(name)
    }

    pub fn port(&self, ivr: &str, port: &str) -> Option<&PortState> {
        self.ports.get(ivr)?.get(port)
    }

    pub fn agent(&self, tserver: &str, dn: &str) -> Option<&AgentState> {
        self.dns.get(tserver)?.get(dn)?.agent.as_ref()
    }

    /// The agent state of a DN as a history transition (what the engine persists per touched
    /// agent entity; see [`crate::intervals`]).
    pub fn agent_snapshot(&self, tserver: &str, dn: &str) -> Option<AgentSnapshot> {
        let (ts, ds) = self.dns.get_key_value(tserver)?;
        let (dn, slot) = ds.get_key_value(dn)?;
        let a = slot.agent.as_ref()?;
        Some(AgentSnapshot {
            agent_id: a.agent_id.clone(),
            tserver: ts.clone(),
            dn: dn.clone(),
            status: a.status,
            work_mode: a.work_mode,
            reason: a.reason.as_deref().map(str::to_owned),
            start: a.since,
            start_seq: a.since_seq,
        })
    }

    pub fn ivr(&self, name: &IvrName) -> Option<&IvrConfig> {
        self.config.ivrs.get(name)
    }

    /// The status of a DN for state purposes: LoggedOut when never seen.
    pub fn dn_status(&self, tserver: &str, dn: &str) -> AgentStatus {
        self.agent(tserver, dn)
            .map_or(AgentStatus::LoggedOut, |a| a.status)
    }

    /// The answer to an AgentQuery: None if `port` is not a configured port of `ivr`; Unknown
    /// when the port's T-Server is not OK (the original could not ask it); else the DN's status.
    pub fn agent_query(&self, ivr: &str, port: &str) -> Option<AgentStatus> {
        let pc = self.config.port(ivr, port)?;
        let up = self
            .server(pc.tserver.as_str())
            .is_some_and(|s| s.status == Availability::Ok);
        if !up {
            return Some(AgentStatus::Unknown);
        }
        Some(self.dn_status(pc.tserver.as_str(), pc.dn.as_str()))
    }

    /// The MonitorInfo `Server` of each T-Server the IVR uses, in its configured order: what a
    /// LoginReq with `ServerMonitor='set'` is answered with. Empty for an unknown IVR.
    pub fn server_statuses_for(&self, ivr: &IvrName) -> Vec<MonitorInfo> {
        let Some(cfg) = self.config.ivrs.get(ivr) else {
            return Vec::new();
        };
        cfg.tservers.iter().map(|ts| self.server_info(ts)).collect()
    }

    /// A T-Server's MonitorInfo: Unavailable when it was never seen or configured.
    pub(crate) fn server_info(&self, name: &TServerName) -> MonitorInfo {
        match self.servers.get(name) {
            Some(s) => MonitorInfo::Server {
                name: name.clone(),
                status: s.status,
                switch: s.switch.clone(),
            },
            None => MonitorInfo::Server {
                name: name.clone(),
                status: Availability::Unavailable,
                switch: self
                    .config
                    .tservers
                    .get(name)
                    .and_then(|t| t.switch.clone()),
            },
        }
    }
}
