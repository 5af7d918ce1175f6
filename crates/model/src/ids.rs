//! Identifiers. Newtypes so that a DN is never passed where an agent id is expected; the
//! representation is private so it can change (e.g. to an inline small string) without
//! touching callers.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A T-Server application name, as in its log header (`Application name:`) and in configuration.
    TServerName
);
string_id!(
    /// A directory number on the switch (`AttributeThisDN`).
    Dn
);
string_id!(
    /// An agent's login id (`AttributeAgentID`).
    AgentId
);
string_id!(
    /// A queue / ACD group DN (`AttributeThisQueue`).
    Queue
);
string_id!(
    /// The name of an IVR object: the `ClientName` of a `LoginReq`.
    IvrName
);
string_id!(
    /// An IVR port number as sent on the wire (a string: leading zeros are significant).
    PortNum
);
