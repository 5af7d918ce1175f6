//! The statuses of the MonitorInfo vocabulary and the T-Library work modes.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The `Status` of a MonitorInfo `Agent`.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize, Encode, Decode,
)]
pub enum AgentStatus {
    LoggedIn,
    LoggedOut,
    Ready,
    NotReady,
    Unknown,
}

impl AgentStatus {
    pub const ALL: [AgentStatus; 5] = [
        AgentStatus::LoggedIn,
        AgentStatus::LoggedOut,
        AgentStatus::Ready,
        AgentStatus::NotReady,
        AgentStatus::Unknown,
    ];

    /// The wire spelling (`LoggedIn`, ...), also used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::LoggedIn => "LoggedIn",
            AgentStatus::LoggedOut => "LoggedOut",
            AgentStatus::Ready => "Ready",
            AgentStatus::NotReady => "NotReady",
            AgentStatus::Unknown => "Unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The status an `EventAddressInfo` `AgentStatus` extension value stands for
    /// (docs/protocol.md section 5): `<=0` Unknown, 1 LoggedIn, 2 Ready, 3-5 NotReady, else Unknown.
    pub fn from_address_info_code(code: i64) -> Self {
        match code {
            1 => AgentStatus::LoggedIn,
            2 => AgentStatus::Ready,
            3..=5 => AgentStatus::NotReady,
            _ => AgentStatus::Unknown,
        }
    }
}

impl fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `Status` of a MonitorInfo `Server` or `Port`: `OK` or `Unavailable`.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize, Encode, Decode,
)]
pub enum Availability {
    #[serde(rename = "OK")]
    Ok,
    Unavailable,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Ok => "OK",
            Availability::Unavailable => "Unavailable",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "OK" => Some(Availability::Ok),
            "Unavailable" => Some(Availability::Unavailable),
            _ => None,
        }
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `AttributeAgentWorkMode` (T-Library `TAgentWorkMode`).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize, Encode, Decode,
)]
pub enum WorkMode {
    Unknown,
    ManualIn,
    AutoIn,
    AfterCallWork,
    AuxWork,
    NoCallDisconnect,
    WalkAway,
    ReturnBack,
    /// A code outside the documented range, kept as printed.
    Other(i32),
}

impl WorkMode {
    pub fn from_code(code: i32) -> Self {
        match code {
            0 => WorkMode::Unknown,
            1 => WorkMode::ManualIn,
            2 => WorkMode::AutoIn,
            3 => WorkMode::AfterCallWork,
            4 => WorkMode::AuxWork,
            5 => WorkMode::NoCallDisconnect,
            6 => WorkMode::WalkAway,
            7 => WorkMode::ReturnBack,
            other => WorkMode::Other(other),
        }
    }

    pub fn code(self) -> i32 {
        match self {
            WorkMode::Unknown => 0,
            WorkMode::ManualIn => 1,
            WorkMode::AutoIn => 2,
            WorkMode::AfterCallWork => 3,
            WorkMode::AuxWork => 4,
            WorkMode::NoCallDisconnect => 5,
            WorkMode::WalkAway => 6,
            WorkMode::ReturnBack => 7,
            WorkMode::Other(c) => c,
        }
    }

    /// The name as T-Server logs print it (`1 (ManualIn)`); `Other(9)` prints as `9`.
    pub fn name(self) -> String {
        match self {
            WorkMode::Unknown => "Unknown".into(),
            WorkMode::ManualIn => "ManualIn".into(),
            WorkMode::AutoIn => "AutoIn".into(),
            WorkMode::AfterCallWork => "AfterCallWork".into(),
            WorkMode::AuxWork => "AuxWork".into(),
            WorkMode::NoCallDisconnect => "NoCallDisconnect".into(),
            WorkMode::WalkAway => "WalkAway".into(),
            WorkMode::ReturnBack => "ReturnBack".into(),
            WorkMode::Other(c) => c.to_string(),
        }
    }

    /// Parses a name (`ManualIn`) or a number (`1`).
    pub fn parse(s: &str) -> Option<Self> {
        if let Ok(code) = s.trim().parse::<i32>() {
            return Some(Self::from_code(code));
        }
        (0..=7).map(Self::from_code).find(|m| m.name() == s.trim())
    }
}

impl fmt::Display for WorkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_info_codes_follow_the_protocol_table() {
        assert_eq!(
            AgentStatus::from_address_info_code(-1),
            AgentStatus::Unknown
        );
        assert_eq!(AgentStatus::from_address_info_code(0), AgentStatus::Unknown);
        assert_eq!(
            AgentStatus::from_address_info_code(1),
            AgentStatus::LoggedIn
        );
        assert_eq!(AgentStatus::from_address_info_code(2), AgentStatus::Ready);
        for c in 3..=5 {
            assert_eq!(
                AgentStatus::from_address_info_code(c),
                AgentStatus::NotReady
            );
        }
        assert_eq!(AgentStatus::from_address_info_code(6), AgentStatus::Unknown);
    }

    #[test]
    fn work_mode_round_trips_codes_and_names() {
        for code in -2..12 {
            let m = WorkMode::from_code(code);
            assert_eq!(m.code(), code);
            assert_eq!(WorkMode::parse(&m.name()), Some(m));
        }
        assert_eq!(WorkMode::parse("ManualIn"), Some(WorkMode::ManualIn));
        assert_eq!(WorkMode::parse("nonsense"), None);
    }

    #[test]
    fn statuses_round_trip_their_wire_spelling() {
        for s in AgentStatus::ALL {
            assert_eq!(AgentStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(Availability::parse("OK"), Some(Availability::Ok));
        assert_eq!(Availability::parse("ok"), None);
    }
}
