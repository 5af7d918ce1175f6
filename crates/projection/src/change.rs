//! What one folded record produces: the MonitorInfo pushes it causes ([`Change`]), the entities
//! whose stored state it altered ([`EntityKey`]) and the inconsistencies it revealed
//! ([`FoldAnomaly`]).

use ivrstate_model::{
    AgentStatus, AnomalyKind, Availability, Dn, IvrName, PortNum, Seq, TServerName,
};
use serde::{Deserialize, Serialize};

/// One MonitorInfo for one IVR: the publisher sends `info` to the clients logged in as `ivr`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Change {
    pub ivr: IvrName,
    pub info: MonitorInfo,
}

/// The child of a `<MonitorInfo>` (docs/protocol.md section 4).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum MonitorInfo {
    Server {
        name: TServerName,
        status: Availability,
        switch: Option<String>,
    },
    Port {
        port: PortNum,
        status: Availability,
    },
    Agent {
        port: PortNum,
        status: AgentStatus,
    },
}

/// An entity whose state a record changed: the engine persists the new state of exactly these.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum EntityKey {
    Server(TServerName),
    Port(IvrName, PortNum),
    Agent(TServerName, Dn),
}

/// An inconsistency the fold found and tolerated (docs/design.md invariant 5: anomalies, not panics).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct FoldAnomaly {
    /// The record that revealed it.
    pub seq: Seq,
    pub kind: AnomalyKind,
    pub tserver: Option<TServerName>,
    pub dn: Option<Dn>,
    pub detail: String,
}

/// The output buffers of [`crate::State::apply`]. Reused across records so that the rebuild loop
/// does not allocate three vectors per event: the caller clears it (or lets it accumulate a
/// batch) between calls.
///
/// What is collected can be narrowed for loops that do not need it (each skipped item saves the
/// cloning of its ids): [`Applied::without_changes`] for a rebuild that persists touched entities
/// but publishes nothing, [`Applied::state_only`] for an as-of replay that needs only the state.
/// Anomalies are always collected.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Applied {
    pub changes: Vec<Change>,
    pub touched: Vec<EntityKey>,
    pub anomalies: Vec<FoldAnomaly>,
    collect: Collect,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
enum Collect {
    #[default]
    All,
    NoChanges,
    StateOnly,
}

impl Applied {
    /// Collects changes, touched entities and anomalies.
    pub fn new() -> Self {
        Self::default()
    }

    /// Collects touched entities and anomalies; `changes` stays empty.
    pub fn without_changes() -> Self {
        Applied {
            collect: Collect::NoChanges,
            ..Self::default()
        }
    }

    /// Collects anomalies only; `changes` and `touched` stay empty.
    pub fn state_only() -> Self {
        Applied {
            collect: Collect::StateOnly,
            ..Self::default()
        }
    }

    pub fn collects_changes(&self) -> bool {
        self.collect == Collect::All
    }

    pub fn collects_touched(&self) -> bool {
        self.collect != Collect::StateOnly
    }

    /// Empties the three vectors, keeping their capacity (and what is collected).
    pub fn clear(&mut self) {
        self.changes.clear();
        self.touched.clear();
        self.anomalies.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.touched.is_empty() && self.anomalies.is_empty()
    }

    /// Records a change if changes are collected (the closure builds it only then).
    pub(crate) fn change(&mut self, f: impl FnOnce() -> Change) {
        if self.collects_changes() {
            self.changes.push(f());
        }
    }

    /// Records a touched entity if those are collected.
    pub(crate) fn touch(&mut self, f: impl FnOnce() -> EntityKey) {
        if self.collects_touched() {
            self.touched.push(f());
        }
    }
}
