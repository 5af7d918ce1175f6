//! What the session needs to know of the state, as a trait.
//!
//! The session answers logins and queries from the current state; going through this trait
//! keeps its tests independent of the fold (a small fake state is enough) and lets the hub
//! hold either the projection's `State` or anything else that can answer.

use ivrstate_model::{AgentStatus, IvrConfig, IvrName, PortNum};
use ivrstate_projection::State;

pub use ivrstate_projection::{Change, MonitorInfo};

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

impl StateView for State {
    fn ivr(&self, name: &IvrName) -> Option<&IvrConfig> {
        State::ivr(self, name)
    }
    fn agent_query(&self, ivr: &IvrName, port: &PortNum) -> Option<AgentStatus> {
        State::agent_query(self, ivr.as_str(), port.as_str())
    }
    fn server_statuses_for(&self, ivr: &IvrName) -> Vec<MonitorInfo> {
        State::server_statuses_for(self, ivr)
    }
    fn server_version(&self) -> Option<&str> {
        self.config().version.as_deref()
    }
}
