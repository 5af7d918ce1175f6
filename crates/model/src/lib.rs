//! The vocabulary of ivrstate.
//!
//! Everything the other crates talk about is defined here: the events recorded in the log
//! ([`Event`], wrapped in an [`Envelope`] and, once stored, a [`Record`]), the ids of the
//! things they are about ([`TServerName`], [`Dn`], [`PortNum`], [`AgentId`], [`IvrName`]),
//! the statuses of the MonitorInfo vocabulary ([`AgentStatus`], [`Availability`]) and time
//! ([`Micros`]), and the one bincode configuration of stored bytes ([`encoding`]). This crate
//! does no I/O.

pub mod encoding;
mod event;
mod ids;
mod status;
mod time;

pub use encoding::bincode_config;
pub use event::*;
pub use ids::*;
pub use status::*;
pub use time::*;

/// Position of a record in the log. Seqs start at 1 and have no gaps.
pub type Seq = u64;
