//! One connection's protocol state machine (docs/protocol.md sections 1-5), sans-IO.
//!
//! The driver feeds it decoded frames (or the decoder's error) together with a view of the
//! current state, and carries out what it returns: frames to send, requests to record, or a
//! close. It never blocks and never touches a socket, so each rule below is tested without one.
//!
//! Choices where the protocol is silent (documented here and in the tests):
//! - A request other than LoginReq before a successful login is answered
//!   `CallError FailedReq='<request name>' ReqId='n'` with the request's own CallId; the
//!   connection stays open (the client may log in next). LogMsg, Reset, FlowControl and unknown
//!   messages get no answer, logged in or not.
//! - A request whose CallId differs from the login's is answered the same way, with the login
//!   CallId (every message of a session carries it), and is not carried out or recorded.
//! - AgentQuery on a port the IVR does not have: `CallError FailedReq='AgentQuery' ReqId='n'`
//!   (no TlibErrCode: no T-Library request failed).
//! - Agent control: `CallError FailedReq='AgentControl' TlibErrCode='50' ReqId='n'` (there is
//!   no switch link to carry it) and the request is recorded, with any `Password` attribute
//!   replaced by `***` so that the audit log holds no secrets.
//! - While the server is not ready, a login gets `InitInProgress` whatever its ClientName (the
//!   configuration may not be known yet), after the version check.
//! - Each LoginReq is evaluated afresh and its outcome replaces the previous login: a login that
//!   does not end in `Status='OK'` leaves the session logged out (and receiving no pushes).
//! - Error frames carry one byte: [`ERROR_BAD_FRAME`] or [`ERROR_BAD_XML`].
//! - With an allow-list of client names ([`Session::with_allowed_clients`]), a LoginReq whose
//!   ClientName is not on it is answered `Status='NoSuchClient'` and the connection is closed,
//!   whether or not the server is ready (the list is static configuration, known before the
//!   store is): a client that is not expected gets nothing more than a configured-but-unknown
//!   name would, and cannot keep probing on the same connection.

use crate::frame::{encode_frame, FrameError, FrameKind};
use crate::view::{MonitorInfo, StateView};
use crate::xml::{self, GctiMsg, LoginResult, LoginStatus, Message};
use ivrstate_model::{ClientRequest, IvrName};
use std::collections::HashSet;
use std::sync::Arc;
use tracing::{debug, warn};

/// The Error frame code sent for a frame that could not be decoded.
pub const ERROR_BAD_FRAME: u8 = 1;
/// The Error frame code sent for a Data frame whose XML could not be decoded.
pub const ERROR_BAD_XML: u8 = 2;
/// The protocol versions a LoginReq may ask for.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["1.0", "2.0", "3.0", "4.0"];
/// Reported in LoginResp when the configuration names no server version.
pub const DEFAULT_SERVER_VERSION: &str = concat!("ivrstate ", env!("CARGO_PKG_VERSION"));

/// What the driver must do.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Output {
    /// Send these frame bytes (a whole frame, header included).
    Send(Vec<u8>),
    /// Append this request to the log (for audit).
    Record(ClientRequest),
    /// Close the connection after sending what came before.
    Close { reason: String },
}

#[derive(Clone, Debug)]
struct Login {
    ivr: IvrName,
    call_id: String,
}

/// The protocol state of one connection.
#[derive(Clone, Debug)]
pub struct Session {
    client: String,
    login: Option<Login>,
    logins: u64,
    /// Client names that may log in; `None`: any configured IVR.
    allowed: Option<Arc<HashSet<IvrName>>>,
}

impl Session {
    /// `client_addr` names the peer in records and logs (`127.0.0.1:51234`).
    pub fn new(client_addr: impl Into<String>) -> Self {
        Session {
            client: client_addr.into(),
            login: None,
            logins: 0,
            allowed: None,
        }
    }

    /// Only these client names may log in (shared by every session of a server); `None`
    /// leaves logins to the configuration alone.
    pub fn with_allowed_clients(mut self, allowed: Option<Arc<HashSet<IvrName>>>) -> Self {
        self.allowed = allowed;
        self
    }

    /// The IVR this session is logged in to with `Status='OK'`: pushes for it go here.
    pub fn logged_in_ivr(&self) -> Option<&IvrName> {
        self.login.as_ref().map(|l| &l.ivr)
    }

    /// The CallId of the current login: every message of the session carries it.
    pub fn call_id(&self) -> Option<&str> {
        self.login.as_ref().map(|l| l.call_id.as_str())
    }

    /// How many LoginReq this session has answered (whatever the outcome).
    pub fn logins(&self) -> u64 {
        self.logins
    }

    pub fn client(&self) -> &str {
        &self.client
    }

    /// The decoder refused the byte stream: answer with an Error frame and close.
    pub fn on_frame_error(&mut self, err: &FrameError) -> Vec<Output> {
        fail(ERROR_BAD_FRAME, format!("bad frame: {err}"))
    }

    /// Handles one frame. `ready` is false while the store is opening or catching up.
    pub fn on_frame(
        &mut self,
        frame: crate::frame::Frame,
        state: &impl StateView,
        ready: bool,
    ) -> Vec<Output> {
        match frame.kind {
            FrameKind::KeepAliveRequest => frame_out(FrameKind::KeepAliveResponse, &[])
                .into_iter()
                .collect(),
            FrameKind::KeepAliveResponse => Vec::new(),
            FrameKind::Error => {
                let code = frame
                    .body
                    .first()
                    .map_or_else(|| "none".to_owned(), |c| c.to_string());
                vec![Output::Close {
                    reason: format!("client sent an Error frame (code {code})"),
                }]
            }
            FrameKind::Data => match xml::decode(&frame.body) {
                Ok(msg) => self.on_message(msg, state, ready),
                Err(e) => fail(ERROR_BAD_XML, format!("bad XML: {e}")),
            },
        }
    }

    fn on_message(&mut self, m: GctiMsg, state: &impl StateView, ready: bool) -> Vec<Output> {
        if let Message::LoginReq {
            version,
            client_name,
            server_monitor,
            ..
        } = &m.msg
        {
            return self.on_login(
                &m.call_id,
                version,
                client_name,
                *server_monitor,
                state,
                ready,
            );
        }
        let req_id = request_id(&m.msg);
        let answers = matches!(
            m.msg,
            Message::AgentQuery { .. }
                | Message::AgentLogin(_)
                | Message::AgentLogout(_)
                | Message::AgentReady(_)
                | Message::AgentNotReady(_)
        );
        let Some(login) = &self.login else {
            if answers {
                debug!(client = %self.client, request = m.msg.name(), "request before login");
                return send(&m.call_id, call_error(m.msg.name(), None, req_id));
            }
            debug!(client = %self.client, request = m.msg.name(), "message before login ignored");
            return Vec::new();
        };
        if m.call_id != login.call_id {
            debug!(client = %self.client, got = %m.call_id, want = %login.call_id, "request with another CallId");
            return send(&login.call_id, call_error(m.msg.name(), None, req_id));
        }
        let call_id = login.call_id.as_str();
        match m.msg {
            Message::AgentQuery { req_id, port } => match state.agent_query(&login.ivr, &port) {
                Some(status) => send(
                    call_id,
                    Message::MonitorInfo {
                        req_id: Some(req_id),
                        info: MonitorInfo::Agent { port, status },
                    },
                ),
                None => send(call_id, call_error("AgentQuery", None, Some(req_id))),
            },
            Message::AgentLogin(ref c)
            | Message::AgentLogout(ref c)
            | Message::AgentReady(ref c)
            | Message::AgentNotReady(ref c) => {
                let record = ClientRequest {
                    ivr: login.ivr.clone(),
                    client: self.client.clone(),
                    request: m.msg.name().to_owned(),
                    req_id: Some(c.req_id.clone()),
                    port: Some(c.port.clone()),
                    attributes: redact(&c.attributes),
                };
                let mut out = send(
                    call_id,
                    call_error("AgentControl", Some("50"), Some(c.req_id.clone())),
                );
                out.push(Output::Record(record));
                out
            }
            Message::LogMsg { attributes } => vec![Output::Record(ClientRequest {
                ivr: login.ivr.clone(),
                client: self.client.clone(),
                request: "LogMsg".to_owned(),
                req_id: None,
                port: None,
                attributes: redact(&attributes),
            })],
            other => {
                debug!(client = %self.client, message = other.name(), "message without an answer ignored");
                Vec::new()
            }
        }
    }

    fn on_login(
        &mut self,
        call_id: &str,
        version: &str,
        client_name: &str,
        server_monitor: bool,
        state: &impl StateView,
        ready: bool,
    ) -> Vec<Output> {
        self.login = None;
        self.logins += 1;
        let server_version = state
            .server_version()
            .unwrap_or(DEFAULT_SERVER_VERSION)
            .to_owned();
        let resp = |result, status, config_options| Message::LoginResp {
            version: server_version.clone(),
            result,
            status: Some(status),
            config_options,
        };
        if !SUPPORTED_VERSIONS.contains(&version) {
            let m = Message::LoginResp {
                version: server_version.clone(),
                result: LoginResult::InvalidProtocolVer,
                status: None,
                config_options: None,
            };
            return send(call_id, m);
        }
        let ivr_name = IvrName::from(client_name);
        if let Some(allowed) = &self.allowed {
            if !allowed.contains(&ivr_name) {
                warn!(client = %self.client, client_name, "login refused: ClientName is not on the allow-list");
                let mut out = send(
                    call_id,
                    resp(LoginResult::Success, LoginStatus::NoSuchClient, None),
                );
                out.push(Output::Close {
                    reason: format!("ClientName '{client_name}' is not on the allow-list"),
                });
                return out;
            }
        }
        if !ready {
            return send(
                call_id,
                resp(LoginResult::Success, LoginStatus::InitInProgress, None),
            );
        }
        let Some(ivr) = state.ivr(&ivr_name) else {
            return send(
                call_id,
                resp(LoginResult::Success, LoginStatus::NoSuchClient, None),
            );
        };
        let options = (!ivr.options.is_empty()).then(|| ivr.options.clone());
        let mut out = send(
            call_id,
            resp(LoginResult::Success, LoginStatus::Ok, options),
        );
        if out.is_empty() {
            // The options do not fit a frame: log in anyway, without them.
            warn!(client = %self.client, ivr = %ivr_name, "ConfigOptions too large for a frame; sent without them");
            out = send(call_id, resp(LoginResult::Success, LoginStatus::Ok, None));
        }
        // ServerMonitor works only for Version 4.0 (docs/protocol.md section 3).
        if server_monitor && version == "4.0" {
            for info in state.server_statuses_for(&ivr_name) {
                out.extend(send(call_id, Message::MonitorInfo { req_id: None, info }));
            }
        }
        self.login = Some(Login {
            ivr: ivr_name,
            call_id: call_id.to_owned(),
        });
        out
    }
}

/// The ReqId of a request, when it has one.
fn request_id(m: &Message) -> Option<String> {
    match m {
        Message::AgentQuery { req_id, .. } => Some(req_id.clone()),
        Message::AgentLogin(c)
        | Message::AgentLogout(c)
        | Message::AgentReady(c)
        | Message::AgentNotReady(c) => Some(c.req_id.clone()),
        _ => None,
    }
}

fn call_error(failed_req: &str, tlib_err_code: Option<&str>, req_id: Option<String>) -> Message {
    Message::CallError {
        failed_req: failed_req.to_owned(),
        tlib_err_code: tlib_err_code.map(str::to_owned),
        req_id,
    }
}

/// Passwords are not written to the audit log.
fn redact(attrs: &[(String, String)]) -> Vec<(String, String)> {
    attrs
        .iter()
        .map(|(k, v)| {
            if k.eq_ignore_ascii_case("Password") {
                (k.clone(), "***".to_owned())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect()
}

/// A Data frame holding `msg` with `call_id`; nothing if it cannot fit a frame (only a huge
/// ConfigOptions could; the caller decides what to do).
fn send(call_id: &str, msg: Message) -> Vec<Output> {
    let doc = xml::encode(&GctiMsg {
        call_id: call_id.to_owned(),
        msg,
    });
    frame_out(FrameKind::Data, &doc).into_iter().collect()
}

fn frame_out(kind: FrameKind, body: &[u8]) -> Option<Output> {
    match encode_frame(kind, body) {
        Ok(f) => Some(Output::Send(f)),
        Err(e) => {
            warn!("not sent: {e}");
            None
        }
    }
}

fn fail(code: u8, reason: String) -> Vec<Output> {
    let mut out: Vec<Output> = frame_out(FrameKind::Error, &[code]).into_iter().collect();
    out.push(Output::Close { reason });
    out
}

#[cfg(test)]
mod tests;
