//! The GctiMsg XML codec (docs/protocol.md sections 2-5), sans-IO.
//!
//! Decoding reads the bytes as ISO-8859-1 (each byte is the char of the same code point), lets
//! quick-xml tokenize them into a small bounded tree, then reads the message out of the tree by
//! element name: the original server is non-validating, so unknown elements and attributes are
//! tolerated. Hostile input is bounded: no DOCTYPE internal subset (so no entity definitions),
//! only the five predefined entities and numeric character references, a maximum depth, element
//! count and attribute/text size.
//!
//! Encoding writes the bytes by hand (it is simple and on the hot path of every push): the
//! prolog and DOCTYPE the original sends, single-quoted attributes, the DTD spellings.

use crate::view::MonitorInfo;
use ivrstate_model::{AgentStatus, Availability, ConfigOption, ConfigValue, PortNum, TServerName};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use thiserror::Error;

/// The deepest element nesting accepted (GctiMsg > LoginResp > ConfigOptions > List... ).
pub const MAX_DEPTH: usize = 16;
/// The most elements in one document.
pub const MAX_ELEMENTS: usize = 4096;
/// The most attributes on one element.
pub const MAX_ATTRIBUTES: usize = 64;
/// The longest attribute value or text, in characters after unescaping.
pub const MAX_VALUE_LEN: usize = 8 * 1024;
/// The longest document (a frame body can never be longer).
pub const MAX_DOCUMENT_LEN: usize = crate::frame::MAX_BODY_LEN;

pub const PROLOG: &str = "<?xml version='1.0' encoding='iso-8859-1'?>";
pub const DOCTYPE: &str = "<!DOCTYPE GctiMsg SYSTEM 'IServer.dtd'>";

/// One GctiMsg: the CallId and its one message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GctiMsg {
    pub call_id: String,
    pub msg: Message,
}

/// The messages of the protocol. Attributes not named here are kept in `attributes`, in the
/// order sent, where the message has them.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Message {
    LoginReq {
        version: String,
        client_name: String,
        /// `ReportStatus`: `true`/`false`; absent or another value is `None`.
        report_status: Option<bool>,
        /// `ServerMonitor='set'`; absent or `clear` (or anything else) is `false`.
        server_monitor: bool,
    },
    LoginResp {
        version: String,
        result: LoginResult,
        status: Option<LoginStatus>,
        config_options: Option<Vec<ConfigOption>>,
    },
    MonitorInfo {
        req_id: Option<String>,
        info: MonitorInfo,
    },
    AgentQuery {
        req_id: String,
        port: PortNum,
    },
    AgentLogin(AgentControl),
    AgentLogout(AgentControl),
    AgentReady(AgentControl),
    AgentNotReady(AgentControl),
    CallError {
        failed_req: String,
        tlib_err_code: Option<String>,
        req_id: Option<String>,
    },
    LogMsg {
        attributes: Vec<(String, String)>,
    },
    Reset,
    FlowControl {
        status: Option<String>,
    },
    /// Any other element (the call-control family: `NewCall`, `CallInfoReq`, `UDataGet`, ...):
    /// its name, and the request's id when it carries one (a `ReqId` attribute, or a
    /// `<RequestId>` child as `UDataGet` has), so an answer can name it.
    Unknown {
        name: String,
        req_id: Option<String>,
    },
}

impl Message {
    /// The element name on the wire.
    pub fn name(&self) -> &str {
        match self {
            Message::LoginReq { .. } => "LoginReq",
            Message::LoginResp { .. } => "LoginResp",
            Message::MonitorInfo { .. } => "MonitorInfo",
            Message::AgentQuery { .. } => "AgentQuery",
            Message::AgentLogin(_) => "AgentLogin",
            Message::AgentLogout(_) => "AgentLogout",
            Message::AgentReady(_) => "AgentReady",
            Message::AgentNotReady(_) => "AgentNotReady",
            Message::CallError { .. } => "CallError",
            Message::LogMsg { .. } => "LogMsg",
            Message::Reset => "Reset",
            Message::FlowControl { .. } => "FlowControl",
            Message::Unknown { name, .. } => name,
        }
    }
}

/// The attributes of AgentLogin/AgentLogout/AgentReady/AgentNotReady.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AgentControl {
    pub req_id: String,
    pub port: PortNum,
    /// `Queue`, `AgentId`, `Password`, `WorkMode`, ... as sent.
    pub attributes: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LoginResult {
    Success,
    InvalidProtocolVer,
}

impl LoginResult {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginResult::Success => "Success",
            LoginResult::InvalidProtocolVer => "InvalidProtocolVer",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LoginStatus {
    NoSuchClient,
    InitInProgress,
    Ok,
}

impl LoginStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginStatus::NoSuchClient => "NoSuchClient",
            LoginStatus::InitInProgress => "InitInProgress",
            LoginStatus::Ok => "OK",
        }
    }
}

/// Why a document was refused. `at` is a byte offset in the document.
#[derive(Clone, PartialEq, Eq, Debug, Error)]
pub enum XmlError {
    #[error("document of {len} bytes is over the limit of {MAX_DOCUMENT_LEN}")]
    TooLarge { len: usize },
    #[error("malformed XML at byte {at}: {reason}")]
    Syntax { at: u64, reason: String },
    #[error("DOCTYPE with an internal subset is refused at byte {at}")]
    DoctypeSubset { at: u64 },
    #[error("elements nested deeper than {MAX_DEPTH} at byte {at}")]
    TooDeep { at: u64 },
    #[error("more than {MAX_ELEMENTS} elements at byte {at}")]
    TooManyElements { at: u64 },
    #[error("more than {MAX_ATTRIBUTES} attributes on <{element}> at byte {at}")]
    TooManyAttributes { element: String, at: u64 },
    #[error("value longer than {MAX_VALUE_LEN} characters in <{element}> at byte {at}")]
    ValueTooLong { element: String, at: u64 },
    #[error("no root element")]
    NoRoot,
    #[error("root element is <{got}>, expected <GctiMsg>")]
    NotGctiMsg { got: String },
    #[error("GctiMsg has no CallId")]
    MissingCallId,
    #[error("GctiMsg has no message element")]
    MissingMessage,
    #[error("<{element}> lacks the required attribute {attribute}")]
    MissingAttribute {
        element: String,
        attribute: &'static str,
    },
    #[error("<{element}> has {attribute}='{value}', which is not allowed")]
    BadValue {
        element: String,
        attribute: &'static str,
        value: String,
    },
    #[error("<{element}> lacks its required child element")]
    MissingChild { element: String },
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// An element of the bounded tree the decoder builds.
#[derive(Debug, Default)]
struct Elem {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Elem>,
    text: String,
}

impl Elem {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &'static str) -> Result<&str, XmlError> {
        self.attr(name).ok_or_else(|| XmlError::MissingAttribute {
            element: self.name.clone(),
            attribute: name,
        })
    }

    /// The attributes other than those in `except`, in document order.
    fn other_attrs(&self, except: &[&str]) -> Vec<(String, String)> {
        self.attrs
            .iter()
            .filter(|(k, _)| !except.contains(&k.as_str()))
            .cloned()
            .collect()
    }

    fn bad(&self, attribute: &'static str, value: &str) -> XmlError {
        XmlError::BadValue {
            element: self.name.clone(),
            attribute,
            value: value.to_owned(),
        }
    }
}

/// Decodes one GctiMsg document.
pub fn decode(bytes: &[u8]) -> Result<GctiMsg, XmlError> {
    if bytes.len() > MAX_DOCUMENT_LEN {
        return Err(XmlError::TooLarge { len: bytes.len() });
    }
    // ISO-8859-1: every byte is the Unicode code point of the same value.
    let text: String = bytes.iter().map(|&b| char::from(b)).collect();
    let root = parse_tree(&text)?;
    to_gcti(root)
}

/// Maps a byte offset in the UTF-8 text back to the offset in the ISO-8859-1 input.
fn input_offset(text: &str, pos: u64) -> u64 {
    let end = usize::try_from(pos).unwrap_or(usize::MAX).min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b & 0xC0 != 0x80)
        .count() as u64
}

fn parse_tree(text: &str) -> Result<Elem, XmlError> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Elem> = Vec::new();
    let mut elements = 0usize;
    loop {
        let before = input_offset(text, reader.buffer_position());
        let event = reader.read_event().map_err(|e| XmlError::Syntax {
            at: input_offset(text, reader.error_position()),
            reason: e.to_string(),
        })?;
        let syntax = |e: &dyn std::fmt::Display| XmlError::Syntax {
            at: before,
            reason: e.to_string(),
        };
        match event {
            Event::Start(start) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements { at: before });
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep { at: before });
                }
                stack.push(read_element(&start, before)?);
            }
            Event::Empty(start) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements { at: before });
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep { at: before });
                }
                let elem = read_element(&start, before)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(elem),
                    None => return Ok(elem),
                }
            }
            Event::End(_) => {
                // check_end_names guarantees the match; an End with an empty stack is an error
                // quick-xml reports itself.
                let Some(done) = stack.pop() else {
                    return Err(XmlError::NoRoot);
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Ok(done),
                }
            }
            Event::Text(t) => {
                if let Some(cur) = stack.last_mut() {
                    let s = t.unescape().map_err(|e| syntax(&e))?;
                    push_text(cur, &s, before)?;
                }
            }
            Event::CData(t) => {
                if let Some(cur) = stack.last_mut() {
                    let s = String::from_utf8_lossy(&t);
                    push_text(cur, &s, before)?;
                }
            }
            Event::DocType(d) => {
                // An internal subset is where entities are declared: refusing it is what keeps
                // entity expansion (billion laughs, external entities) out entirely.
                if d.contains(&b'[') {
                    return Err(XmlError::DoctypeSubset { at: before });
                }
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => {
                return Err(match stack.first() {
                    Some(_) => XmlError::Syntax {
                        at: before,
                        reason: "unexpected end of document".into(),
                    },
                    None => XmlError::NoRoot,
                });
            }
        }
    }
}

fn push_text(cur: &mut Elem, s: &str, at: u64) -> Result<(), XmlError> {
    if cur.text.chars().count() + s.chars().count() > MAX_VALUE_LEN {
        return Err(XmlError::ValueTooLong {
            element: cur.name.clone(),
            at,
        });
    }
    cur.text.push_str(s);
    Ok(())
}

/// An XML name, as far as an ISO-8859-1 document can spell one: a letter or `_` or `:` first,
/// then letters, digits, `_`, `:`, `-`, `.`.
fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_alphabetic() || first == '_' || first == ':')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'))
}

fn read_element(start: &BytesStart<'_>, at: u64) -> Result<Elem, XmlError> {
    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
    // quick-xml takes everything up to whitespace as the name (`< a='1'/>` has an empty one,
    // `<a=b'c/>` one with a quote in it); such names are not XML, and encoding them back would
    // not give a document either.
    if !is_name(&name) {
        return Err(XmlError::Syntax {
            at,
            reason: format!("not an element name: {name:?}"),
        });
    }
    let mut attrs = Vec::new();
    for attr in start.attributes().with_checks(true) {
        let attr = attr.map_err(|e| XmlError::Syntax {
            at,
            reason: e.to_string(),
        })?;
        if attrs.len() >= MAX_ATTRIBUTES {
            return Err(XmlError::TooManyAttributes { element: name, at });
        }
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        if !is_name(&key) {
            return Err(XmlError::Syntax {
                at,
                reason: format!("not an attribute name: {key:?}"),
            });
        }
        if attr.value.len() > MAX_VALUE_LEN * 2 {
            return Err(XmlError::ValueTooLong { element: name, at });
        }
        let value = attr.unescape_value().map_err(|e| XmlError::Syntax {
            at,
            reason: e.to_string(),
        })?;
        if value.chars().count() > MAX_VALUE_LEN {
            return Err(XmlError::ValueTooLong { element: name, at });
        }
        attrs.push((key, value.into_owned()));
    }
    Ok(Elem {
        name,
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

fn to_gcti(root: Elem) -> Result<GctiMsg, XmlError> {
    if root.name != "GctiMsg" {
        return Err(XmlError::NotGctiMsg { got: root.name });
    }
    let call_id = root
        .children
        .iter()
        .find(|c| c.name == "CallId")
        .map(|c| c.text.trim().to_owned())
        .ok_or(XmlError::MissingCallId)?;
    let msg_elem = root
        .children
        .iter()
        .find(|c| c.name != "CallId")
        .ok_or(XmlError::MissingMessage)?;
    Ok(GctiMsg {
        call_id,
        msg: to_message(msg_elem)?,
    })
}

fn to_message(e: &Elem) -> Result<Message, XmlError> {
    Ok(match e.name.as_str() {
        "LoginReq" => Message::LoginReq {
            version: e.required("Version")?.to_owned(),
            client_name: e.required("ClientName")?.to_owned(),
            report_status: match e.attr("ReportStatus") {
                Some("true") => Some(true),
                Some("false") => Some(false),
                _ => None,
            },
            server_monitor: e.attr("ServerMonitor") == Some("set"),
        },
        "LoginResp" => {
            let version = e.attr("IServerVer").or_else(|| e.attr("IServerVersion"));
            let version = version.ok_or_else(|| XmlError::MissingAttribute {
                element: e.name.clone(),
                attribute: "IServerVer",
            })?;
            let result = match e.required("Result")? {
                "Success" => LoginResult::Success,
                "InvalidProtocolVer" | "InvalidProtocolVersion" => LoginResult::InvalidProtocolVer,
                other => return Err(e.bad("Result", other)),
            };
            let status = match e.attr("Status") {
                None => None,
                Some("NoSuchClient") => Some(LoginStatus::NoSuchClient),
                Some("InitInProgress") => Some(LoginStatus::InitInProgress),
                Some("OK") => Some(LoginStatus::Ok),
                Some(other) => return Err(e.bad("Status", other)),
            };
            let config_options = match e.children.iter().find(|c| c.name == "ConfigOptions") {
                Some(c) => Some(read_options(c)?),
                None => None,
            };
            Message::LoginResp {
                version: version.to_owned(),
                result,
                status,
                config_options,
            }
        }
        "MonitorInfo" => {
            let child = e
                .children
                .iter()
                .find(|c| matches!(c.name.as_str(), "Server" | "Port" | "Agent"))
                .ok_or_else(|| XmlError::MissingChild {
                    element: e.name.clone(),
                })?;
            Message::MonitorInfo {
                req_id: e.attr("ReqId").map(str::to_owned),
                info: read_info(child)?,
            }
        }
        "AgentQuery" => Message::AgentQuery {
            req_id: e.required("ReqId")?.to_owned(),
            port: PortNum::new(e.required("PortNum")?),
        },
        "AgentLogin" => Message::AgentLogin(read_control(e)?),
        "AgentLogout" => Message::AgentLogout(read_control(e)?),
        "AgentReady" => Message::AgentReady(read_control(e)?),
        "AgentNotReady" => Message::AgentNotReady(read_control(e)?),
        "CallError" => Message::CallError {
            failed_req: e.required("FailedReq")?.to_owned(),
            tlib_err_code: e.attr("TlibErrCode").map(str::to_owned),
            req_id: e.attr("ReqId").map(str::to_owned),
        },
        "LogMsg" => Message::LogMsg {
            attributes: e.attrs.clone(),
        },
        "Reset" => Message::Reset,
        "FlowControl" => Message::FlowControl {
            status: e.attr("Status").map(str::to_owned),
        },
        other => Message::Unknown {
            name: other.to_owned(),
            req_id: e.attr("ReqId").map(str::to_owned).or_else(|| {
                e.children
                    .iter()
                    .find(|c| c.name == "RequestId")
                    .map(|c| c.text.trim().to_owned())
            }),
        },
    })
}

fn read_control(e: &Elem) -> Result<AgentControl, XmlError> {
    Ok(AgentControl {
        req_id: e.required("ReqId")?.to_owned(),
        port: PortNum::new(e.required("PortNum")?),
        attributes: e.other_attrs(&["ReqId", "PortNum"]),
    })
}

fn read_info(e: &Elem) -> Result<MonitorInfo, XmlError> {
    let availability = |e: &Elem| {
        let s = e.required("Status")?;
        Availability::parse(s).ok_or_else(|| e.bad("Status", s))
    };
    Ok(match e.name.as_str() {
        "Server" => MonitorInfo::Server {
            name: TServerName::new(e.required("Name")?),
            status: availability(e)?,
            switch: e.attr("Switch").map(str::to_owned),
        },
        "Port" => MonitorInfo::Port {
            port: PortNum::new(e.required("PortNum")?),
            status: availability(e)?,
        },
        _ => {
            let s = e.required("Status")?;
            MonitorInfo::Agent {
                port: PortNum::new(e.required("PortNum")?),
                status: AgentStatus::parse(s).ok_or_else(|| e.bad("Status", s))?,
            }
        }
    })
}

fn read_options(e: &Elem) -> Result<Vec<ConfigOption>, XmlError> {
    let mut out = Vec::new();
    for c in &e.children {
        match c.name.as_str() {
            "Node" => {
                let name = c.required("Name")?.to_owned();
                let val = c.attr("Val").unwrap_or("");
                // `Bin` has no counterpart in the model: it is kept as its text.
                let value = match c.attr("Type") {
                    Some("Int") => match val.trim().parse::<i64>() {
                        Ok(i) => ConfigValue::Int(i),
                        Err(_) => return Err(c.bad("Val", val)),
                    },
                    _ => ConfigValue::Str(val.to_owned()),
                };
                out.push(ConfigOption { name, value });
            }
            "List" => {
                let name = c.required("Name")?.to_owned();
                out.push(ConfigOption {
                    name,
                    value: ConfigValue::List(read_options(c)?),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Appends `s` as ISO-8859-1 with XML escaping: chars above U+00FF become `?`, control chars
/// other than TAB/LF/CR are dropped (XML 1.0 cannot carry them), and TAB/LF/CR are written as
/// character references so that attribute-value normalisation cannot turn them into spaces.
fn push_escaped(out: &mut Vec<u8>, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.extend_from_slice(b"&lt;"),
            '>' => out.extend_from_slice(b"&gt;"),
            '&' => out.extend_from_slice(b"&amp;"),
            '"' => out.extend_from_slice(b"&quot;"),
            '\'' => out.extend_from_slice(b"&apos;"),
            '\t' => out.extend_from_slice(b"&#9;"),
            '\n' => out.extend_from_slice(b"&#10;"),
            '\r' => out.extend_from_slice(b"&#13;"),
            c if (c as u32) < 0x20 => {}
            c => out.push(u8::try_from(c as u32).unwrap_or(b'?')),
        }
    }
}

/// Writes a name (element or attribute) in ISO-8859-1, as the decoder reads it. Names come
/// from decoded input, so every character fits a byte; anything else becomes `?`.
fn push_name(out: &mut Vec<u8>, name: &str) {
    out.extend(name.chars().map(|c| u8::try_from(c as u32).unwrap_or(b'?')));
}

fn push_attr(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b' ');
    push_name(out, name);
    out.extend_from_slice(b"='");
    push_escaped(out, value);
    out.push(b'\'');
}

/// The bytes every document starts with, up to and including the CallId: a push is
/// `envelope_prefix + message element + ENVELOPE_SUFFIX`, so a writer can keep the prefix of
/// its session and wrap a message element encoded once for all clients.
pub fn envelope_prefix(call_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(PROLOG.len() + DOCTYPE.len() + 32 + call_id.len());
    out.extend_from_slice(PROLOG.as_bytes());
    out.extend_from_slice(DOCTYPE.as_bytes());
    out.extend_from_slice(b"<GctiMsg><CallId>");
    push_escaped(&mut out, call_id);
    out.extend_from_slice(b"</CallId>");
    out
}

/// The bytes every document ends with.
pub const ENVELOPE_SUFFIX: &[u8] = b"</GctiMsg>";

/// Encodes a whole document.
pub fn encode(msg: &GctiMsg) -> Vec<u8> {
    let mut out = envelope_prefix(&msg.call_id);
    encode_message(&msg.msg, &mut out);
    out.extend_from_slice(ENVELOPE_SUFFIX);
    out
}

/// Encodes a MonitorInfo element alone (see [`envelope_prefix`]).
pub fn encode_monitor_info(req_id: Option<&str>, info: &MonitorInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    write_monitor_info(req_id, info, &mut out);
    out
}

fn write_monitor_info(req_id: Option<&str>, info: &MonitorInfo, out: &mut Vec<u8>) {
    out.extend_from_slice(b"<MonitorInfo");
    if let Some(r) = req_id {
        push_attr(out, "ReqId", r);
    }
    out.push(b'>');
    match info {
        MonitorInfo::Server {
            name,
            status,
            switch,
        } => {
            out.extend_from_slice(b"<Server");
            push_attr(out, "Name", name.as_str());
            push_attr(out, "Status", status.as_str());
            if let Some(s) = switch {
                push_attr(out, "Switch", s);
            }
        }
        MonitorInfo::Port { port, status } => {
            out.extend_from_slice(b"<Port");
            push_attr(out, "PortNum", port.as_str());
            push_attr(out, "Status", status.as_str());
        }
        MonitorInfo::Agent { port, status } => {
            out.extend_from_slice(b"<Agent");
            push_attr(out, "PortNum", port.as_str());
            push_attr(out, "Status", status.as_str());
        }
    }
    out.extend_from_slice(b"/></MonitorInfo>");
}

/// Appends the message element alone.
pub fn encode_message(msg: &Message, out: &mut Vec<u8>) {
    let empty = |out: &mut Vec<u8>, name: &str, attrs: &[(&str, &str)]| {
        out.push(b'<');
        push_name(out, name);
        for (k, v) in attrs {
            push_attr(out, k, v);
        }
        out.extend_from_slice(b"/>");
    };
    match msg {
        Message::LoginReq {
            version,
            client_name,
            report_status,
            server_monitor,
        } => {
            let mut a = vec![
                ("Version", version.as_str()),
                ("ClientName", client_name.as_str()),
            ];
            if let Some(r) = report_status {
                a.push(("ReportStatus", if *r { "true" } else { "false" }));
            }
            if *server_monitor {
                a.push(("ServerMonitor", "set"));
            }
            empty(out, "LoginReq", &a);
        }
        Message::LoginResp {
            version,
            result,
            status,
            config_options,
        } => {
            out.extend_from_slice(b"<LoginResp");
            push_attr(out, "IServerVer", version);
            push_attr(out, "Result", result.as_str());
            if let Some(s) = status {
                push_attr(out, "Status", s.as_str());
            }
            match config_options {
                None => out.extend_from_slice(b"/>"),
                Some(opts) => {
                    out.extend_from_slice(b"><ConfigOptions>");
                    write_options(opts, out);
                    out.extend_from_slice(b"</ConfigOptions></LoginResp>");
                }
            }
        }
        Message::MonitorInfo { req_id, info } => write_monitor_info(req_id.as_deref(), info, out),
        Message::AgentQuery { req_id, port } => {
            empty(
                out,
                "AgentQuery",
                &[("ReqId", req_id), ("PortNum", port.as_str())],
            );
        }
        Message::AgentLogin(c)
        | Message::AgentLogout(c)
        | Message::AgentReady(c)
        | Message::AgentNotReady(c) => {
            let mut a = vec![("ReqId", c.req_id.as_str()), ("PortNum", c.port.as_str())];
            a.extend(c.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            empty(out, msg.name(), &a);
        }
        Message::CallError {
            failed_req,
            tlib_err_code,
            req_id,
        } => {
            let mut a = vec![("FailedReq", failed_req.as_str())];
            if let Some(t) = tlib_err_code {
                a.push(("TlibErrCode", t));
            }
            if let Some(r) = req_id {
                a.push(("ReqId", r));
            }
            empty(out, "CallError", &a);
        }
        Message::LogMsg { attributes } => {
            let a: Vec<(&str, &str)> = attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            empty(out, "LogMsg", &a);
        }
        Message::Reset => empty(out, "Reset", &[]),
        Message::FlowControl { status } => match status {
            Some(s) => empty(out, "FlowControl", &[("Status", s)]),
            None => empty(out, "FlowControl", &[]),
        },
        Message::Unknown { name, req_id } => match req_id {
            Some(r) => empty(out, name, &[("ReqId", r)]),
            None => empty(out, name, &[]),
        },
    }
}

fn write_options(opts: &[ConfigOption], out: &mut Vec<u8>) {
    for o in opts {
        match &o.value {
            ConfigValue::Int(i) => {
                out.extend_from_slice(b"<Node");
                push_attr(out, "Name", &o.name);
                push_attr(out, "Type", "Int");
                push_attr(out, "Val", &i.to_string());
                out.extend_from_slice(b"/>");
            }
            ConfigValue::Str(s) => {
                out.extend_from_slice(b"<Node");
                push_attr(out, "Name", &o.name);
                push_attr(out, "Type", "Str");
                push_attr(out, "Val", s);
                out.extend_from_slice(b"/>");
            }
            ConfigValue::List(items) => {
                out.extend_from_slice(b"<List");
                push_attr(out, "Name", &o.name);
                out.push(b'>');
                write_options(items, out);
                out.extend_from_slice(b"</List>");
            }
        }
    }
}

#[cfg(test)]
mod tests;
