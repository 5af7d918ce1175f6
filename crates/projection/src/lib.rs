//! The fold of the log into the state an IVR Server reports, and the history arithmetic.
//!
//! - [`State::apply`] folds one [`ivrstate_model::Record`]: it updates the configuration, the
//!   T-Servers ([`ServerState`]), the IVR ports ([`PortState`]) and the agents per (T-Server, DN)
//!   ([`AgentState`]), and reports into an [`Applied`] the MonitorInfo [`Change`]s for the IVRs
//!   concerned, the [`EntityKey`]s it touched and the [`FoldAnomaly`]s it found. The rules are in
//!   `rules.rs` (agents) and `fold.rs` (servers, ports, configuration).
//! - [`State::to_bytes`] / [`State::from_bytes`]: snapshots.
//! - [`intervals`] and [`audit`]: history and audit from persisted transitions ([`AgentSnapshot`]);
//!   [`interval_report`] and [`sessions`]: the audit per wall-clock interval and per login session.
//!
//! Pure (docs/design.md invariant 5): no I/O, no clock, no panics on any input.

mod audit;
mod change;
mod fold;
mod history;
mod report;
mod rules;
mod snapshot;
mod state;
mod table;

pub use audit::{audit, AgentAudit, Audit, StatusSeconds, NONE_KEY};
pub use change::{Applied, Change, EntityKey, FoldAnomaly, MonitorInfo};
pub use history::{intervals, AgentSnapshot, Interval};
pub use report::{buckets, interval_report, sessions, Bucket, IntervalRow, LoginSession, Step};
pub use snapshot::{SnapshotError, SNAPSHOT_VERSION};
pub use state::{AgentState, Config, PortState, ServerState, State, TServerConfig};

#[cfg(test)]
mod tests;
