//! What the session needs to know of the state, as a trait.
//!
//! The session answers logins and queries from the current state; going through this trait
//! keeps its tests independent of the fold (a small fake state is enough) and lets the hub
//! hold either the projection's `State` or anything else that can answer.

use ivrstate_model::{AgentStatus, Availability, IvrConfig, IvrName, PortNum, TServerName};

/// The child of a `<MonitorInfo>` (PROTOCOL.md section 4). Same shape as the projection's.
#[derive(Clone, PartialEq, Eq, Debug)]
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

/// One MonitorInfo for the clients of one IVR.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Change {
    pub ivr: IvrName,
    pub info: MonitorInfo,
}

/// The read side of the state that a session consults.
pub trait StateView {
    /// The configured IVR of that ClientName, if any.
    fn ivr(&self, name: &IvrName) -> Option<&IvrConfig>;
    /// The Agent status of a port: `None` for a port the IVR does not have, `Unknown` while
    /// the port's T-Server link is down.
    fn agent_query(&self, ivr: &IvrName, port: &PortNum) -> Option<AgentStatus>;
    /// A `Server` MonitorInfo for every T-Server the IVR uses, in configuration order.
    fn server_statuses_for(&self, ivr: &IvrName) -> Vec<MonitorInfo>;
    /// The version reported in LoginResp, when configured.
    fn server_version(&self) -> Option<&str>;
}
