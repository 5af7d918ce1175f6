//! One connection's protocol state machine (docs/protocol.md sections 1-5), sans-IO and
//! quinn-style.
//!
//! The driver hands it the bytes it read and the time ([`Session::handle_bytes`]), and
//! carries out what it asks for: frames to send ([`Session::poll_transmit`]), requests to record
//! and a close ([`Session::poll_event`]), a wake-up at [`Session::poll_timeout`] reported back
//! through [`Session::handle_timeout`]. It owns the frame decoder and its timers (the login
//! timeout, the idle timeout), never blocks, never reads a clock and never touches a socket, so
//! every rule below, timers included, is tested without one; and one driver loop (`server.rs`)
//! serves plain TCP, TLS and replay.
//!
//! Choices where the protocol is silent (documented here and in the tests):
//! - Every answer goes out on the CallId of the request it answers. A real IVR driver opens a
//!   CallId per call beside the login's, and routes answers by CallId.
//! - A request ivrstate does not carry out — the call-control family (`NewCall`, `CallInfoReq`,
//!   `UDataGet`/`UDataSet`/`UDataDel`, `RouteRequest`, `OneStepXfer`, `EndCall`, ...) and any
//!   element it does not know — is answered `CallError FailedReq='<element>'` (with the
//!   request's `ReqId` or `<RequestId>` when it has one), logged in or not; the connection stays
//!   open. LogMsg, Reset, FlowControl and CallError get no answer.
//! - A monitoring or agent request before a successful login is answered
//!   `CallError FailedReq='<request name>' ReqId='n'`; the connection stays open (the client
//!   may log in next). After the login, AgentQuery and agent control are carried out whatever
//!   CallId they come with, and answered on that CallId. Unsolicited pushes carry the login's.
//! - AgentQuery on a port the IVR does not have: `CallError FailedReq='AgentQuery' ReqId='n'`
//!   (no TlibErrCode: no T-Library request failed).
//! - Agent control: `CallError FailedReq='AgentControl' TlibErrCode='50' ReqId='n'` (there is
//!   no switch link to carry it) and the request is recorded, with any `Password` attribute
//!   replaced by `***` so that the audit log holds no secrets.
//! - A successful LoginResp to a Version 4.0 client is followed by `<FlowControl Status='Off'/>`
//!   on its CallId, as the IVR Server 8.1 does (seen in real captures, for `OK` and
//!   `InitInProgress` alike).
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
//! - Timers: a connection that has answered no LoginReq within the login timeout is closed; with
//!   an idle timeout, one that has sent nothing for that long is closed (keep-alive requests
//!   count as something). Once closed, a session takes no more input.

use crate::frame::{encode_frame, FrameDecoder, FrameError, FrameKind};
use crate::view::{MonitorInfo, StateView};
use crate::xml::{self, GctiMsg, LoginResult, LoginStatus, Message};
use ivrstate_model::{ClientRequest, IvrName};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// The Error frame code sent for a frame that could not be decoded.
pub const ERROR_BAD_FRAME: u8 = 1;
/// The Error frame code sent for a Data frame whose XML could not be decoded.
pub const ERROR_BAD_XML: u8 = 2;
/// The protocol versions a LoginReq may ask for.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["1.0", "2.0", "3.0", "4.0"];
/// Reported in LoginResp when the configuration names no server version.
pub const DEFAULT_SERVER_VERSION: &str = concat!("ivrstate ", env!("CARGO_PKG_VERSION"));

/// What the driver must do besides sending frames.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SessionEvent {
    /// Append this request to the log (for audit).
    Record(ClientRequest),
    /// Close the connection after sending every frame polled before.
    Close { reason: String },
}

/// The session's timers.
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    /// A connection that has answered no LoginReq by then is closed.
    pub login_timeout: Duration,
    /// A connection that has sent nothing for this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            login_timeout: Duration::from_secs(30),
            idle_timeout: None,
        }
    }
}

#[derive(Clone, Debug)]
struct Login {
    ivr: IvrName,
    call_id: String,
}

/// The protocol state of one connection.
#[derive(Debug)]
pub struct Session {
    client: String,
    login: Option<Login>,
    logins: u64,
    /// Client names that may log in; `None`: any configured IVR.
    allowed: Option<Arc<HashSet<IvrName>>>,
    decoder: FrameDecoder,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<SessionEvent>,
    timers: Timers,
    opened: Instant,
    last_input: Instant,
    closed: bool,
}

impl Session {
    /// A connection from `client_addr` (it names the peer in records and logs,
    /// `127.0.0.1:51234`), opened at `now`.
    pub fn new(client_addr: impl Into<String>, now: Instant, timers: Timers) -> Self {
        Session {
            client: client_addr.into(),
            login: None,
            logins: 0,
            allowed: None,
            decoder: FrameDecoder::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            timers,
            opened: now,
            last_input: now,
            closed: false,
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

    /// The CallId of the current login: unsolicited pushes carry it.
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

    /// Whether the session has asked to close (it takes no more input).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Bytes read from the client at `now`: every whole frame in them is handled, against
    /// `state`; `ready` is false while the store is opening or catching up. What to do next is
    /// in [`Session::poll_transmit`] and [`Session::poll_event`].
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        bytes: &[u8],
        state: &impl StateView,
        ready: bool,
    ) {
        if self.closed {
            return;
        }
        self.last_input = now;
        self.decoder.push(bytes);
        while !self.closed {
            match self.decoder.next_frame() {
                None => break,
                Some(Err(e)) => self.on_frame_error(&e),
                Some(Ok(frame)) => self.handle_frame(frame, state, ready),
            }
        }
    }

    /// The next whole frame to send, in order.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// The next request to record or the close, in order. A close comes after every frame
    /// queued before it: send what [`Session::poll_transmit`] gives first.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let idle = self.timers.idle_timeout.map(|d| self.last_input + d);
        let login = (self.logins == 0).then(|| self.opened + self.timers.login_timeout);
        match (login, idle) {
            (Some(l), Some(i)) => Some(l.min(i)),
            (l, i) => l.or(i),
        }
    }

    /// The time has come (or passed) for a timer: closes the connection when one expired.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        let login_expired = self.logins == 0 && now >= self.opened + self.timers.login_timeout;
        let idle_expired = self
            .timers
            .idle_timeout
            .is_some_and(|d| now >= self.last_input + d);
        if login_expired {
            self.close("no LoginReq before the login timeout".to_owned());
        } else if idle_expired {
            self.close("idle timeout".to_owned());
        }
    }

    fn close(&mut self, reason: String) {
        self.closed = true;
        self.events.push_back(SessionEvent::Close { reason });
    }

    /// The decoder refused the byte stream: answer with an Error frame and close.
    fn on_frame_error(&mut self, err: &FrameError) {
        warn!(client = %self.client, "{err}");
        self.fail(ERROR_BAD_FRAME, format!("bad frame: {err}"));
    }

    fn fail(&mut self, code: u8, reason: String) {
        let _ = self.frame_out(FrameKind::Error, &[code]);
        self.close(reason);
    }

    fn handle_frame(&mut self, frame: crate::frame::Frame, state: &impl StateView, ready: bool) {
        match frame.kind {
            FrameKind::KeepAliveRequest => {
                let _ = self.frame_out(FrameKind::KeepAliveResponse, &[]);
            }
            FrameKind::KeepAliveResponse => {}
            FrameKind::Error => {
                let code = frame
                    .body
                    .first()
                    .map_or_else(|| "none".to_owned(), |c| c.to_string());
                self.close(format!("client sent an Error frame (code {code})"));
            }
            FrameKind::Data => match xml::decode(&frame.body) {
                Ok(msg) => self.on_message(msg, state, ready),
                Err(e) => self.fail(ERROR_BAD_XML, format!("bad XML: {e}")),
            },
        }
    }

    fn on_message(&mut self, m: GctiMsg, state: &impl StateView, ready: bool) {
        let GctiMsg { call_id, msg } = m;
        match msg {
            Message::LoginReq {
                version,
                client_name,
                server_monitor,
                ..
            } => self.on_login(
                &call_id,
                &version,
                &client_name,
                server_monitor,
                state,
                ready,
            ),
            // Not requests: nothing to answer (answering a CallError could ping-pong).
            Message::LogMsg { attributes } => match &self.login {
                Some(login) => {
                    let record = ClientRequest {
                        ivr: login.ivr.clone(),
                        client: self.client.clone(),
                        request: "LogMsg".to_owned(),
                        req_id: None,
                        port: None,
                        attributes: redact(&attributes),
                    };
                    self.events.push_back(SessionEvent::Record(record));
                }
                None => debug!(client = %self.client, "LogMsg before login ignored"),
            },
            Message::Reset | Message::FlowControl { .. } | Message::CallError { .. } => {
                debug!(client = %self.client, message = msg.name(), "message without an answer ignored");
            }
            Message::AgentQuery { req_id, port } => {
                let Some(login) = &self.login else {
                    debug!(client = %self.client, "AgentQuery before login");
                    return self.send(&call_id, call_error("AgentQuery", None, Some(req_id)));
                };
                let answer = match state.agent_query(&login.ivr, &port) {
                    Some(status) => Message::MonitorInfo {
                        req_id: Some(req_id),
                        info: MonitorInfo::Agent { port, status },
                    },
                    None => call_error("AgentQuery", None, Some(req_id)),
                };
                self.send(&call_id, answer);
            }
            Message::AgentLogin(ref c)
            | Message::AgentLogout(ref c)
            | Message::AgentReady(ref c)
            | Message::AgentNotReady(ref c) => {
                let Some(login) = &self.login else {
                    debug!(client = %self.client, request = msg.name(), "agent control before login");
                    return self.send(
                        &call_id,
                        call_error(msg.name(), None, Some(c.req_id.clone())),
                    );
                };
                let record = ClientRequest {
                    ivr: login.ivr.clone(),
                    client: self.client.clone(),
                    request: msg.name().to_owned(),
                    req_id: Some(c.req_id.clone()),
                    port: Some(c.port.clone()),
                    attributes: redact(&c.attributes),
                };
                self.send(
                    &call_id,
                    call_error("AgentControl", Some("50"), Some(c.req_id.clone())),
                );
                self.events.push_back(SessionEvent::Record(record));
            }
            // The call-control family and anything unknown: ivrstate places no calls.
            Message::Unknown { name, req_id } => {
                debug!(client = %self.client, request = %name, %call_id, "request not carried out");
                self.send(&call_id, call_error(&name, None, req_id));
            }
            // Server-to-client messages sent by a client: not carried out either.
            Message::LoginResp { .. } | Message::MonitorInfo { .. } => {
                let name = msg.name().to_owned();
                self.send(&call_id, call_error(&name, None, None));
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
    ) {
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
            return self.send(call_id, m);
        }
        // The IVR Server follows a successful LoginResp to a 4.0 client with this.
        let flow_control_off = |s: &mut Session| {
            if version == "4.0" {
                s.send(
                    call_id,
                    Message::FlowControl {
                        status: Some("Off".to_owned()),
                    },
                );
            }
        };
        let ivr_name = IvrName::from(client_name);
        if let Some(allowed) = &self.allowed {
            if !allowed.contains(&ivr_name) {
                warn!(client = %self.client, client_name, "login refused: ClientName is not on the allow-list");
                self.send(
                    call_id,
                    resp(LoginResult::Success, LoginStatus::NoSuchClient, None),
                );
                return self.close(format!(
                    "ClientName '{client_name}' is not on the allow-list"
                ));
            }
        }
        if !ready {
            self.send(
                call_id,
                resp(LoginResult::Success, LoginStatus::InitInProgress, None),
            );
            return flow_control_off(self);
        }
        let Some(ivr) = state.ivr(&ivr_name) else {
            return self.send(
                call_id,
                resp(LoginResult::Success, LoginStatus::NoSuchClient, None),
            );
        };
        let options = (!ivr.options.is_empty()).then(|| ivr.options.clone());
        if !self.try_send(
            call_id,
            resp(LoginResult::Success, LoginStatus::Ok, options),
        ) {
            // The options do not fit a frame: log in anyway, without them.
            warn!(client = %self.client, ivr = %ivr_name, "ConfigOptions too large for a frame; sent without them");
            self.send(call_id, resp(LoginResult::Success, LoginStatus::Ok, None));
        }
        flow_control_off(self);
        // ServerMonitor works only for Version 4.0 (docs/protocol.md section 3).
        if server_monitor && version == "4.0" {
            for info in state.server_statuses_for(&ivr_name) {
                self.send(call_id, Message::MonitorInfo { req_id: None, info });
            }
        }
        self.login = Some(Login {
            ivr: ivr_name,
            call_id: call_id.to_owned(),
        });
    }

    /// Queues a Data frame holding `msg` with `call_id`.
    fn send(&mut self, call_id: &str, msg: Message) {
        self.try_send(call_id, msg);
    }

    /// [`Session::send`]; false (nothing queued) if it cannot fit a frame (only a huge
    /// ConfigOptions could; the caller decides what to do).
    fn try_send(&mut self, call_id: &str, msg: Message) -> bool {
        let doc = xml::encode(&GctiMsg {
            call_id: call_id.to_owned(),
            msg,
        });
        self.frame_out(FrameKind::Data, &doc)
    }

    fn frame_out(&mut self, kind: FrameKind, body: &[u8]) -> bool {
        match encode_frame(kind, body) {
            Ok(f) => {
                self.transmit.push_back(f);
                true
            }
            Err(e) => {
                warn!("not sent: {e}");
                false
            }
        }
    }
}

/// The ReqId of a request, when it has one.
#[cfg(test)]
fn request_id(m: &Message) -> Option<String> {
    match m {
        Message::AgentQuery { req_id, .. } => Some(req_id.clone()),
        Message::AgentLogin(c)
        | Message::AgentLogout(c)
        | Message::AgentReady(c)
        | Message::AgentNotReady(c) => Some(c.req_id.clone()),
        Message::Unknown { req_id, .. } => req_id.clone(),
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

#[cfg(test)]
mod tests;
