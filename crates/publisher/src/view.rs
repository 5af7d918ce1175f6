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

#[cfg(test)]
mod tests {
    use super::*;
    use ivrstate_model::{
        Availability, ConfigEvent, ConfigOption, ConfigValue, Dn, Envelope, Event, Micros,
        PortConfig, Record, TLibEvent, TLibKind, TServerName,
    };

    fn rec(seq: u64, event: Event) -> Record {
        Record {
            seq,
            envelope: Envelope {
                time: Micros::from_secs(seq as i64),
                recorded: Micros::from_secs(0),
                event,
            },
        }
    }

    /// The projection's State answers the session's questions as the trait documents.
    #[test]
    fn projection_state_implements_the_view() {
        let mut st = State::new();
        let ivr = IvrName::from("IVR_1");
        let opts = vec![ConfigOption {
            name: "Timeout".into(),
            value: ConfigValue::Str("30".into()),
        }];
        let events = [
            Event::Config(ConfigEvent::ServerSettings {
                version: Some("8.5.000.01".into()),
            }),
            Event::Config(ConfigEvent::TServerAdded {
                name: "TS".into(),
                switch: Some("SW".into()),
            }),
            Event::Config(ConfigEvent::IvrAdded(IvrConfig {
                name: ivr.clone(),
                tservers: vec!["TS".into()],
                options: opts.clone(),
            })),
            Event::Config(ConfigEvent::PortAdded(PortConfig {
                ivr: ivr.clone(),
                port: "01".into(),
                dn: Dn::from("7001"),
                tserver: TServerName::from("TS"),
            })),
        ];
        for (i, e) in events.into_iter().enumerate() {
            st.apply_record(&rec(i as u64 + 1, e));
        }
        let view: &dyn StateView = &st;
        assert_eq!(view.server_version(), Some("8.5.000.01"));
        assert_eq!(view.ivr(&ivr).map(|c| c.options.clone()), Some(opts));
        assert_eq!(view.ivr(&IvrName::from("nope")), None);
        assert_eq!(view.agent_query(&ivr, &PortNum::from("02")), None);
        // The link has not been seen up: the query cannot know.
        assert_eq!(
            view.agent_query(&ivr, &PortNum::from("01")),
            Some(AgentStatus::Unknown)
        );
        let up = Event::TLib(TLibEvent {
            tserver: "TS".into(),
            source_seq: None,
            kind: TLibKind::LinkConnected,
        });
        st.apply_record(&rec(10, up));
        let view: &dyn StateView = &st;
        assert_eq!(
            view.agent_query(&ivr, &PortNum::from("01")),
            Some(AgentStatus::LoggedOut)
        );
        assert_eq!(
            view.server_statuses_for(&ivr),
            vec![MonitorInfo::Server {
                name: "TS".into(),
                status: Availability::Ok,
                switch: Some("SW".into())
            }]
        );
    }
}
