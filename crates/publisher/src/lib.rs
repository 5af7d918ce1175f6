//! The IVR Server side of GLI.
//!
//! - [`frame`]: the GLI frame codec (sans-IO).
//! - [`xml`]: the GctiMsg XML codec (sans-IO).
//! - [`session`]: one connection's protocol state machine (sans-IO).
//! - [`view`]: what a session needs to read of the state ([`StateView`]).
//! - [`hub`] and [`server`]: the tokio side, the only code that touches sockets; each client's
//!   bytes go through its outbox (`outbox.rs`: order, who writes, slow clients).
//! - [`tls`]: optional TLS for GLI (rustls), from PEM files.

pub mod frame;
pub mod hub;
mod outbox;
pub mod server;
pub mod session;
pub mod tls;
pub mod view;
pub mod xml;

pub use hub::{Hub, HubConfig, HubMetrics};
pub use server::{serve, serve_connection, serve_tls};
pub use tls::{TlsConfig, TlsError};
pub use view::{Change, MonitorInfo, StateView};
