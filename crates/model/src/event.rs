//! The events of the log.
//!
//! An [`Envelope`] is what is appended: the event, the event's own time and the time ivrstate
//! recorded it. Once stored it has a [`Seq`] and is a [`Record`]. The log holds T-Library events
//! (from T-Server logs or a live feed), configuration events (from `config apply`), requests that
//! IVR clients made (kept for audit), and anomalies: input that was understood but inconsistent.

use crate::{
    AgentId, AgentStatus, Dn, IvrName, Micros, PortNum, Queue, Seq, TServerName, WorkMode,
};
use bincode::{Decode, Encode};
pub use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// One event as appended to the log.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Encode, Decode)]
pub struct Envelope {
    /// The event's own time: T-Library's `TimeinSecs`/`TimeinuSecs` for T-Server events, the time
    /// of the change for configuration events and client requests.
    pub time: Micros,
    /// When ivrstate recorded it (wall clock at ingest). Not part of the event's identity.
    pub recorded: Micros,
    pub event: Event,
}

/// An envelope with its position in the log.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Record {
    pub seq: Seq,
    #[serde(flatten)]
    pub envelope: Envelope,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Encode, Decode)]
pub enum Event {
    /// A T-Library event reported by a T-Server.
    TLib(TLibEvent),
    /// A configuration change recorded by `config apply`.
    Config(ConfigEvent),
    /// A request an IVR client sent that ivrstate records for audit (agent control, LogMsg).
    Request(ClientRequest),
    /// Input that was understood but is inconsistent (recorded by a source, not by the fold).
    Anomaly(Anomaly),
}

/// A T-Library event from one T-Server.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Encode, Decode)]
pub struct TLibEvent {
    pub tserver: TServerName,
    /// `AttributeEventSequenceNumber`: per T-Server and monotonic while the T-Server runs; a
    /// restarted T-Server starts again, so it identifies an event only together with its time
    /// and content (see the log's dedup).
    pub source_seq: Option<u64>,
    pub kind: TLibKind,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Encode, Decode)]
pub enum TLibKind {
    /// EventAgentLogin, EventAgentLogout, EventAgentReady, EventAgentNotReady,
    /// EventAgentAfterCallWork.
    Agent(AgentEvent),
    /// EventAddressInfo: the answer to RequestQueryAddress, with the `AgentStatus` extension.
    AddressInfo(AddressInfo),
    /// EventLinkConnected: the T-Server's link to the switch is up.
    LinkConnected,
    /// EventLinkDisconnected: the link is down.
    LinkDisconnected,
    /// Not a T-Library event: the feed connection that carried this T-Server's events closed
    /// or failed. Nothing more is known of the T-Server, so its link counts as down (as
    /// EventLinkDisconnected) until an EventLinkConnected; the audit tells the two apart.
    SocketClosed,
}

impl TLibKind {
    /// The T-Library event name (`EventAgentReady`, ...).
    pub fn event_name(&self) -> &'static str {
        match self {
            TLibKind::Agent(a) => a.kind.event_name(),
            TLibKind::AddressInfo(_) => "EventAddressInfo",
            TLibKind::LinkConnected => "EventLinkConnected",
            TLibKind::LinkDisconnected => "EventLinkDisconnected",
            TLibKind::SocketClosed => "SocketClosed",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Encode, Decode)]
pub enum AgentEventKind {
    Login,
    Logout,
    Ready,
    NotReady,
    /// EventAgentAfterCallWork (message id 118): NotReady with work mode AfterCallWork.
    AfterCallWork,
}

impl AgentEventKind {
    pub fn event_name(self) -> &'static str {
        match self {
            AgentEventKind::Login => "EventAgentLogin",
            AgentEventKind::Logout => "EventAgentLogout",
            AgentEventKind::Ready => "EventAgentReady",
            AgentEventKind::NotReady => "EventAgentNotReady",
            AgentEventKind::AfterCallWork => "EventAgentAfterCallWork",
        }
    }

    pub fn from_event_name(name: &str) -> Option<Self> {
        Some(match name {
            "EventAgentLogin" => AgentEventKind::Login,
            "EventAgentLogout" => AgentEventKind::Logout,
            "EventAgentReady" => AgentEventKind::Ready,
            "EventAgentNotReady" => AgentEventKind::NotReady,
            "EventAgentAfterCallWork" => AgentEventKind::AfterCallWork,
            _ => return None,
        })
    }
}

/// An agent-state event on a DN.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Encode, Decode)]
pub struct AgentEvent {
    pub kind: AgentEventKind,
    pub dn: Dn,
    pub agent_id: Option<AgentId>,
    pub queue: Option<Queue>,
    pub work_mode: Option<WorkMode>,
    /// `AttributeReasons` (desktop / software reasons).
    pub reasons: KvList,
    /// `AttributeExtensions` (a switch reason comes as `ReasonCode`).
    pub extensions: KvList,
}

impl AgentEvent {
    /// The reason of a Ready/NotReady: `ReasonCode` in Reasons, else in Extensions, else the
    /// first value of Reasons (T-Servers and desktops differ in the key they use).
    pub fn reason(&self) -> Option<&str> {
        reason_of(&self.reasons, &self.extensions)
    }
}

/// The reason an agent state carries, from an event's Reasons and Extensions lists: `ReasonCode`
/// in Reasons, else in Extensions, else the first value of Reasons (T-Servers and desktops
/// differ in the key they use). The one place that rule is written (agent events and
/// EventAddressInfo alike).
pub fn reason_of<'a>(reasons: &'a KvList, extensions: &'a KvList) -> Option<&'a str> {
    reasons
        .get("ReasonCode")
        .or_else(|| extensions.get("ReasonCode"))
        .or_else(|| reasons.0.first().map(|(_, v)| v.as_str()))
}

/// EventAddressInfo about a DN.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Encode, Decode)]
pub struct AddressInfo {
    pub dn: Dn,
    pub agent_id: Option<AgentId>,
    /// The `AgentStatus` extension as printed (see [`AgentStatus::from_address_info_code`]).
    pub agent_status: Option<i64>,
    pub work_mode: Option<WorkMode>,
    pub reasons: KvList,
    pub extensions: KvList,
}

impl AddressInfo {
    pub fn status(&self) -> AgentStatus {
        self.agent_status
            .map_or(AgentStatus::Unknown, AgentStatus::from_address_info_code)
    }
}

/// A T-Library key-value list (`AttributeReasons`, `AttributeExtensions`), in printed order.
/// Values are kept as text; integers as their decimal spelling. Keys and values are inline small
/// strings, as ids are: a list like `ReasonCode` = `Break` costs one allocation (the list), not
/// five, when it is parsed or read back from the log.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KvList(pub Vec<(CompactString, CompactString)>);

// The log's encoding (bincode), as a derive would write `Vec<(String, String)>`.
impl bincode::Encode for KvList {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        bincode::Encode::encode(&(self.0.len() as u64), encoder)?;
        for (k, v) in &self.0 {
            bincode::Encode::encode(k.as_str(), encoder)?;
            bincode::Encode::encode(v.as_str(), encoder)?;
        }
        Ok(())
    }
}

impl<C> bincode::Decode<C> for KvList {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let pairs: Vec<(String, String)> = bincode::Decode::decode(decoder)?;
        Ok(KvList(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        ))
    }
}

impl<'de, C> bincode::BorrowDecode<'de, C> for KvList {
    fn borrow_decode<D: bincode::de::BorrowDecoder<'de, Context = C>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let pairs: Vec<(&str, &str)> = bincode::BorrowDecode::borrow_decode(decoder)?;
        Ok(KvList(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        ))
    }
}

impl KvList {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A configuration change. `config apply` records the difference between the applied file and
/// the configuration already in the log as these events.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Encode, Decode)]
pub enum ConfigEvent {
    /// `[server]`: the version reported in LoginResp.
    ServerSettings {
        version: Option<String>,
    },
    TServerAdded {
        name: TServerName,
        switch: Option<String>,
    },
    TServerChanged {
        name: TServerName,
        switch: Option<String>,
    },
    TServerRemoved {
        name: TServerName,
    },
    IvrAdded(IvrConfig),
    IvrChanged(IvrConfig),
    IvrRemoved {
        name: IvrName,
    },
    PortAdded(PortConfig),
    PortChanged(PortConfig),
    PortRemoved {
        ivr: IvrName,
        port: PortNum,
    },
}

/// An IVR object: the client that logs in with `ClientName = name`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Encode, Decode)]
pub struct IvrConfig {
    pub name: IvrName,
    /// The T-Servers this IVR uses: Server events go only to their IVRs.
    pub tservers: Vec<TServerName>,
    /// Options returned in LoginResp `ConfigOptions`.
    pub options: Vec<ConfigOption>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Encode, Decode)]
pub struct ConfigOption {
    pub name: String,
    pub value: ConfigValue,
}

/// A `ConfigOptions` node: `<Node Type='Int|Str'>` or a nested `<List>`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Encode, Decode)]
pub enum ConfigValue {
    Int(i64),
    Str(String),
    List(Vec<ConfigOption>),
}

/// An IVR port and the DN whose agent state it shows.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Encode, Decode)]
pub struct PortConfig {
    pub ivr: IvrName,
    pub port: PortNum,
    pub dn: Dn,
    pub tserver: TServerName,
}

/// A request from an IVR client, recorded for audit. ivrstate has no switch link, so agent
/// control requests are answered with a CallError; the record shows that they were asked.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Encode, Decode)]
pub struct ClientRequest {
    pub ivr: IvrName,
    /// The client's address (`127.0.0.1:51234`).
    pub client: String,
    /// The message element name: `AgentLogin`, `AgentLogout`, `AgentReady`, `AgentNotReady`,
    /// `LogMsg`, ...
    pub request: String,
    pub req_id: Option<String>,
    pub port: Option<PortNum>,
    /// The remaining attributes as sent.
    pub attributes: Vec<(String, String)>,
}

/// Input that was understood but inconsistent. The fold reports the anomalies it finds in its
/// own output; this record is for those a source finds (e.g. a T-Server sequence number that
/// went backwards, meaning the T-Server restarted).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Encode, Decode)]
pub struct Anomaly {
    pub tserver: Option<TServerName>,
    pub dn: Option<Dn>,
    pub kind: AnomalyKind,
    pub detail: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Encode, Decode)]
pub enum AnomalyKind {
    /// Ready/NotReady/AfterCallWork on a DN with no agent logged in.
    StateWithoutLogin,
    /// An event for a DN older than the last one seen for it.
    OutOfOrder,
    /// A T-Server's sequence numbers started again (the T-Server restarted).
    SourceRestart,
    /// Login on a DN where an agent was already logged in.
    DoubleLogin,
    /// Logout of an agent that was not logged in.
    LogoutWithoutLogin,
    Other,
}

impl AnomalyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::StateWithoutLogin => "StateWithoutLogin",
            AnomalyKind::OutOfOrder => "OutOfOrder",
            AnomalyKind::SourceRestart => "SourceRestart",
            AnomalyKind::DoubleLogin => "DoubleLogin",
            AnomalyKind::LogoutWithoutLogin => "LogoutWithoutLogin",
            AnomalyKind::Other => "Other",
        }
    }
}

impl Envelope {
    /// The T-Server and sequence number that identify this event at its source, if any.
    pub fn source_key(&self) -> Option<(&TServerName, u64)> {
        match &self.event {
            Event::TLib(t) => t.source_seq.map(|s| (&t.tserver, s)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(reasons: &[(&str, &str)], extensions: &[(&str, &str)]) -> AgentEvent {
        let kv = |p: &[(&str, &str)]| {
            KvList(p.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect())
        };
        AgentEvent {
            kind: AgentEventKind::NotReady,
            dn: Dn::from("7001"),
            agent_id: Some(AgentId::from("1001")),
            queue: None,
            work_mode: Some(WorkMode::AuxWork),
            reasons: kv(reasons),
            extensions: kv(extensions),
        }
    }

    #[test]
    fn reason_prefers_reasons_then_extensions_reason_code() {
        assert_eq!(
            ready(&[("ReasonCode", "Break")], &[("ReasonCode", "Lunch")]).reason(),
            Some("Break")
        );
        assert_eq!(
            ready(&[], &[("ReasonCode", "Lunch")]).reason(),
            Some("Lunch")
        );
        assert_eq!(ready(&[("Pause", "Coffee")], &[]).reason(), Some("Coffee"));
        assert_eq!(ready(&[], &[("Other", "x")]).reason(), None);
    }

    #[test]
    fn event_names_round_trip() {
        for k in [
            AgentEventKind::Login,
            AgentEventKind::Logout,
            AgentEventKind::Ready,
            AgentEventKind::NotReady,
            AgentEventKind::AfterCallWork,
        ] {
            assert_eq!(AgentEventKind::from_event_name(k.event_name()), Some(k));
        }
    }

    #[test]
    fn records_are_json_round_trippable() {
        let rec = Record {
            seq: 7,
            envelope: Envelope {
                time: Micros::from_secs_micros(1_439_853_377, 458_658),
                recorded: Micros::from_secs(1_700_000_000),
                event: Event::TLib(TLibEvent {
                    tserver: TServerName::from("TS_SIP"),
                    source_seq: Some(0x10c9288),
                    kind: TLibKind::Agent(ready(&[("ReasonCode", "Break")], &[])),
                }),
            },
        };
        let line = serde_json::to_string(&rec).unwrap();
        assert!(line.contains("\"seq\":7"), "{line}");
        assert!(line.contains("2015-08-17T23:16:17.458658Z"), "{line}");
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), rec);
        assert_eq!(
            rec.envelope.source_key(),
            Some((&TServerName::from("TS_SIP"), 0x10c9288))
        );
    }
}
