//! Identifiers. Newtypes so that a DN is never passed where an agent id is expected; the
//! representation is private so it can change without touching callers.
//!
//! It is an inline small string ([`CompactString`]): ids are short (DNs, agent ids, port
//! numbers, application names), and up to 24 bytes one is stored in place of a `String`'s
//! pointer, length and capacity. Decoding one from borrowed bytes (bincode's
//! `decode_from_slice` hands serde a `&str` into the slice) therefore allocates nothing, which
//! is most of what rebuilding the state from the log used to spend on allocation.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(CompactString);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(CompactString::from(s.into()))
            }
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0.as_str())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0.as_str())
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(CompactString::from(s))
            }
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                // Inlined when short (and the String's buffer freed), kept when long.
                Self(CompactString::from(s))
            }
        }
        // The log's encoding (bincode): a string, as serde's `transparent` would write it.
        impl bincode::Encode for $name {
            fn encode<E: bincode::enc::Encoder>(
                &self,
                encoder: &mut E,
            ) -> Result<(), bincode::error::EncodeError> {
                bincode::Encode::encode(self.0.as_str(), encoder)
            }
        }
        impl<C> bincode::Decode<C> for $name {
            fn decode<D: bincode::de::Decoder<Context = C>>(
                decoder: &mut D,
            ) -> Result<Self, bincode::error::DecodeError> {
                Ok(Self::from(<String as bincode::Decode<C>>::decode(decoder)?))
            }
        }
        // From a slice: borrowed, so a short id is copied in place and nothing is allocated.
        impl<'de, C> bincode::BorrowDecode<'de, C> for $name {
            fn borrow_decode<D: bincode::de::BorrowDecoder<'de, Context = C>>(
                decoder: &mut D,
            ) -> Result<Self, bincode::error::DecodeError> {
                Ok(Self::from(<&str as bincode::BorrowDecode<C>>::borrow_decode(decoder)?))
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.0.as_str()
            }
        }
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                self.0.as_str()
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
