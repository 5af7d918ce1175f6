//! The TCP feed (`serve --feed-listen`): a connection sends T-Server printouts or NDJSON lines
//! and gets back one line `{"committed":N}` (the running count for that connection) per batch
//! once that batch is stored.
//!
//! Who may write: with [`FeedTokens`] (`--feed-token-file`) a connection's first line must be
//! `AUTH <token>`; anything else closes it before a byte of it is parsed. With TLS and a client
//! CA (`--feed-client-ca`), only clients whose certificate that CA signed get as far as the
//! first line. A connection reads its next chunk only once the last one is stored, so a client
//! that writes faster than the store takes is held back by TCP, not buffered; lines are capped
//! at [`MAX_LINE`] and printouts at a bounded number of attributes.
//!
//! [`FeedSession`] is the protocol without I/O: bytes, quiet periods and commit outcomes in,
//! batches to append and bytes to send out. [`serve_connection`] and [`listen`] are the thin
//! tokio driver around it.

use crate::appender::{Committed, Job};
use crate::follow::{feed_item, FollowItem, LineSplitter};
use crate::parse::{Parsed, TlogParser, MAX_LINE};
use crate::{now, Format, SourceCounters, IDLE_FLUSH};
use ivrstate_model::{Envelope, Event, Micros, TLibEvent, TLibKind, TServerName};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;

/// The longest first line a connection may send while it has not authenticated.
const MAX_AUTH_LINE: u64 = 4096;
/// How long a TLS client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The tokens that may write to the feed (`--feed-token-file`): one per line, either `TOKEN`
/// or `NAME TOKEN` (the name says who wrote, in logs and provenance); blank lines and lines
/// starting with `#` are ignored.
pub struct FeedTokens {
    tokens: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for FeedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FeedTokens({} tokens)", self.tokens.len())
    }
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {reason}", path.display())]
    Bad {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{}: no token in the file", path.display())]
    Empty { path: PathBuf },
}

impl FeedTokens {
    pub fn from_file(path: &Path) -> Result<FeedTokens, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        FeedTokens::parse(&text, path)
    }

    /// The tokens in `text`, the contents of the file `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<FeedTokens, TokenFileError> {
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| TokenFileError::Bad {
                path: path.to_owned(),
                line: i + 1,
                reason: reason.to_owned(),
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (name, token) = match fields.as_slice() {
                [token] => (format!("token {}", tokens.len() + 1), *token),
                [name, token] => ((*name).to_owned(), *token),
                _ => return Err(bad("expected `TOKEN` or `NAME TOKEN`")),
            };
            if token.len() < 16 {
                return Err(bad("a token must have at least 16 characters"));
            }
            tokens.push((name, token.as_bytes().to_vec()));
        }
        if tokens.is_empty() {
            return Err(TokenFileError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(FeedTokens { tokens })
    }

    /// The name of the token `presented` is, compared in constant time (every token is compared
    /// in full, whatever matched).
    fn check(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for (name, token) in &self.tokens {
            if constant_time_eq(token, presented) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// Equal bytes, in a time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    std::hint::black_box(diff) == 0
}

/// Why a feed connection ended before its end of input.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the store is shutting down")]
    ShuttingDown,
    #[error("the store stopped before committing")]
    Stopped,
}

/// One feed connection's protocol state.
///
/// The format is decided by the first non-blank line: `{` starts NDJSON, anything else T-Server
/// printouts. A printout ends when the next one starts, at the end of input, or when the
/// connection goes quiet ([`FeedSession::handle_idle`]), so that its event is not held back.
#[derive(Debug)]
pub struct FeedSession {
    name: String,
    auth: Auth,
    splitter: LineSplitter,
    parser: TlogParser,
    format: Option<Format>,
    items: Vec<FollowItem>,
    parsed: Vec<Parsed>,
    committed: u64,
    transmit: Vec<u8>,
    finished: bool,
    /// The T-Servers whose events this connection carried, and whether their link is up as
    /// far as those events say (false after an EventLinkDisconnected).
    carried: BTreeMap<TServerName, bool>,
}

/// Where a connection is with authentication.
#[derive(Debug)]
enum Auth {
    /// Its first line must be `AUTH <token>`.
    Awaiting(Arc<FeedTokens>),
    /// It may write; `Some(name)` of the token it gave.
    Open(Option<String>),
    /// Refused: closed without parsing anything.
    Refused(String),
}

impl FeedSession {
    /// `name` names the connection in parse errors; `recorded` stamps its events; with
    /// `tokens`, the connection must authenticate first.
    pub fn new(
        name: String,
        tserver: Option<TServerName>,
        recorded: Micros,
        tokens: Option<Arc<FeedTokens>>,
    ) -> Self {
        FeedSession {
            parser: TlogParser::new(&name, tserver, recorded),
            name,
            auth: match tokens {
                Some(tokens) => Auth::Awaiting(tokens),
                None => Auth::Open(None),
            },
            splitter: LineSplitter::new(MAX_LINE),
            format: None,
            items: Vec::new(),
            parsed: Vec::new(),
            committed: 0,
            transmit: Vec::new(),
            finished: false,
            carried: BTreeMap::new(),
        }
    }

    /// These envelopes are being appended: their T-Servers are carried by this connection.
    pub fn handle_sent(&mut self, envelopes: &[Envelope]) {
        for env in envelopes {
            if let Event::TLib(t) = &env.event {
                let up = !matches!(t.kind, TLibKind::LinkDisconnected | TLibKind::SocketClosed);
                self.carried.insert(t.tserver.clone(), up);
            }
        }
    }

    /// The connection closed or failed at `now`: a [`TLibKind::SocketClosed`] event for each
    /// T-Server whose events it carried (and whose link was not already down), so that the
    /// IVRs using it hear that it is Unavailable. Empty the second time.
    pub fn socket_closed(&mut self, now: Micros) -> Vec<Envelope> {
        std::mem::take(&mut self.carried)
            .into_iter()
            .filter(|(_, up)| *up)
            .map(|(tserver, _)| Envelope {
                time: now,
                recorded: now,
                event: Event::TLib(TLibEvent {
                    tserver,
                    source_seq: None,
                    kind: TLibKind::SocketClosed,
                }),
            })
            .collect()
    }

    /// Bytes received, in chunks of any size.
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        if self.is_finished() {
            return;
        }
        self.splitter.push(bytes, &mut self.items);
        if matches!(self.auth, Auth::Awaiting(_))
            && self.items.is_empty()
            && self.splitter.pending() > MAX_AUTH_LINE
        {
            self.refuse(format!(
                "first line longer than {MAX_AUTH_LINE} bytes, expected `AUTH <token>`"
            ));
        }
        self.parse_items();
    }

    /// The connection has been quiet: end the printout in progress.
    pub fn handle_idle(&mut self) {
        if matches!(self.auth, Auth::Open(_)) {
            self.parser.finish(&mut self.parsed);
        }
    }

    /// The peer closed its side: the partial last line and the printout in progress are
    /// complete.
    pub fn handle_eof(&mut self) {
        if self.is_finished() {
            return;
        }
        self.splitter.flush_partial(&mut self.items);
        self.parse_items();
        if let Auth::Awaiting(_) = self.auth {
            self.refuse("closed before `AUTH <token>`".into());
            return;
        }
        self.parser.finish(&mut self.parsed);
        self.finished = true;
    }

    /// Why the connection was refused (it is finished then, and nothing of it was parsed).
    pub fn refusal(&self) -> Option<&str> {
        match &self.auth {
            Auth::Refused(why) => Some(why),
            _ => None,
        }
    }

    /// The name of the token the connection authenticated with.
    pub fn token_name(&self) -> Option<&str> {
        match &self.auth {
            Auth::Open(name) => name.as_deref(),
            _ => None,
        }
    }

    fn refuse(&mut self, why: String) {
        self.auth = Auth::Refused(why);
        self.items.clear();
        self.splitter.reset();
        self.finished = true;
    }

    /// Checks the first line against the tokens: true if the connection may go on.
    fn authenticate(&mut self, line: &[u8]) -> bool {
        let Auth::Awaiting(tokens) = &self.auth else {
            return true;
        };
        let outcome = match line.strip_prefix(b"AUTH ") {
            Some(token) => match tokens.check(token.trim_ascii()) {
                Some(name) => Ok(name.to_owned()),
                None => Err("wrong token".to_owned()),
            },
            None => Err("the first line is not `AUTH <token>`".to_owned()),
        };
        match outcome {
            Ok(name) => {
                self.auth = Auth::Open(Some(name));
                true
            }
            Err(why) => {
                self.refuse(why);
                false
            }
        }
    }

    /// What was parsed since the last call: the next batch to append.
    pub fn poll_parsed(&mut self) -> Vec<Parsed> {
        std::mem::take(&mut self.parsed)
    }

    /// A batch was stored: acknowledge it with the running count.
    pub fn handle_committed(&mut self, part: Committed) {
        self.committed += part.new + part.duplicates;
        self.transmit
            .extend_from_slice(format!("{{\"committed\":{}}}\n", self.committed).as_bytes());
    }

    /// A batch could not be stored: say why (the connection stays open).
    pub fn handle_failed(&mut self, error: &str) {
        self.transmit.extend_from_slice(
            format!("{{\"error\":{}}}\n", serde_json::Value::from(error)).as_bytes(),
        );
    }

    /// Bytes to send to the peer, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.transmit.is_empty()).then(|| std::mem::take(&mut self.transmit))
    }

    /// The input has ended (after [`FeedSession::handle_eof`]).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The format, once the first non-blank line decided it.
    pub fn format(&self) -> Option<Format> {
        self.format
    }

    fn parse_items(&mut self) {
        let mut items = std::mem::take(&mut self.items);
        let mut drained = items.drain(..);
        if matches!(self.auth, Auth::Awaiting(_)) {
            match drained.next() {
                Some(FollowItem::Line { bytes, .. }) => {
                    if !self.authenticate(&bytes) {
                        return;
                    }
                }
                Some(_) => {
                    self.refuse("expected `AUTH <token>`".into());
                    return;
                }
                None => return,
            }
        }
        for item in drained {
            if self.format.is_none() {
                if let FollowItem::Line { bytes, .. } = &item {
                    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
                    self.format = first.map(|&b| {
                        if b == b'{' {
                            Format::Ndjson
                        } else {
                            Format::Tlog
                        }
                    });
                }
            }
            feed_item(
                &self.name,
                self.format.unwrap_or(Format::Tlog),
                &item,
                &mut self.parser,
                &mut self.parsed,
            );
        }
    }
}

/// What every feed connection shares.
#[derive(Clone)]
pub struct FeedConfig {
    /// The T-Server of printouts whose log has no `Application name:` header.
    pub tserver: Option<TServerName>,
    pub jobs: mpsc::Sender<Job>,
    pub counters: Arc<SourceCounters>,
    /// `--feed-token-file`: connections must authenticate first.
    pub tokens: Option<Arc<FeedTokens>>,
    /// `--feed-tls-cert`/`--feed-tls-key` (and `--feed-client-ca`): TLS, mutual with a CA.
    pub tls: Option<TlsAcceptor>,
}

/// Who is on the other end of one feed connection.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Connections accepted before this one (numbered from 1).
    pub number: u64,
    /// The common name of the client certificate (mutual TLS).
    pub certificate: Option<String>,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "feed {} #{}", self.addr, self.number)?;
        if let Some(cn) = &self.certificate {
            write!(f, " (certificate {cn})")?;
        }
        Ok(())
    }
}

/// Accepts feed connections until the task is dropped.
pub async fn listen(listener: TcpListener, config: FeedConfig) {
    let accepted = AtomicU64::new(0);
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("feed accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Acks are small lines a sender may wait on: not held back to be coalesced (Nagle).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("{addr}: set_nodelay: {e}");
        }
        let number = accepted.fetch_add(1, Ordering::Relaxed) + 1;
        let config = config.clone();
        tokio::spawn(async move {
            let mut peer = Peer {
                addr,
                number,
                certificate: None,
            };
            let ended = match &config.tls {
                None => serve_connection(stream, &peer, &config).await,
                Some(tls) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            peer.certificate = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .and_then(|cert| subject_common_name(cert));
                            serve_connection(stream, &peer, &config).await
                        }
                        Ok(Err(e)) => {
                            tracing::warn!("{peer}: refused: TLS handshake failed: {e}");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::warn!("{peer}: refused: TLS handshake took too long");
                            Ok(())
                        }
                    }
                }
            };
            // The connection is closed here, whichever way it ended.
            if let Err(e) = ended {
                tracing::warn!("{peer}: {e}");
            }
        });
    }
}

/// Runs one feed connection to its end: reads, appends each batch through the appender and
/// acknowledges it only once it is stored.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: &Peer,
    config: &FeedConfig,
) -> Result<(), FeedError> {
    let mut session = FeedSession::new(
        peer.to_string(),
        config.tserver.clone(),
        now(),
        config.tokens.clone(),
    );
    let ended = drive(&mut stream, peer, &mut session, config).await;
    // Closed or failed: the T-Servers it carried are gone with it.
    let closed = session.socket_closed(now());
    if !closed.is_empty() {
        tracing::info!(
            "{peer} closed: {} T-Server(s) it carried now Unavailable",
            closed.len()
        );
        let source = source_of(peer, &session);
        if config
            .jobs
            .send(Job::unacknowledged(closed, source))
            .await
            .is_err()
        {
            tracing::warn!(
                "{peer}: the link-down events were not recorded: the store is shutting down"
            );
        }
    }
    ended
}

/// What the connection's records say they came from: the peer, its connection number, the
/// certificate's and the token's names.
fn source_of(peer: &Peer, session: &FeedSession) -> Arc<str> {
    match session.token_name() {
        Some(name) => Arc::from(format!("{peer} (token {name})")),
        None => Arc::from(peer.to_string()),
    }
}

async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    peer: &Peer,
    session: &mut FeedSession,
    config: &FeedConfig,
) -> Result<(), FeedError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut authenticated = false;
    loop {
        match tokio::time::timeout(IDLE_FLUSH, stream.read(&mut buf)).await {
            Ok(Ok(0)) => session.handle_eof(),
            Ok(Ok(n)) => session.handle_bytes(buf.get(..n).unwrap_or_default()),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => session.handle_idle(),
        }
        if let Some(why) = session.refusal() {
            tracing::warn!("{peer}: refused: {why}");
            return Ok(());
        }
        if !authenticated {
            if let Some(name) = session.token_name() {
                authenticated = true;
                tracing::info!("{peer}: authenticated with token {name:?}");
            }
        }
        // The connection is the source: the lines within it are not kept.
        let (envelopes, _lines) = config.counters.count(session.poll_parsed());
        if !envelopes.is_empty() {
            session.handle_sent(&envelopes);
            let (ack_tx, ack_rx) = oneshot::channel();
            config
                .jobs
                .send(Job {
                    envelopes,
                    source: source_of(peer, session),
                    lines: Vec::new(),
                    ack: Some(ack_tx),
                })
                .await
                .map_err(|_| FeedError::ShuttingDown)?;
            match ack_rx.await {
                Ok(Ok(part)) => session.handle_committed(part),
                Ok(Err(e)) => session.handle_failed(&e),
                Err(_) => return Err(FeedError::Stopped),
            }
        }
        if let Some(bytes) = session.poll_transmit() {
            stream.write_all(&bytes).await?;
        }
        if session.is_finished() {
            return Ok(());
        }
    }
}

/// One DER element of `input`: its tag, its contents and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = rest
            .get(..n)?
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest.get(n..)?)
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

/// The subject's common name (OID 2.5.4.3) of a DER X.509 certificate: who a client
/// certificate says it is, for logs and provenance. `None` if it has none or does not parse.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    let (_, certificate, _) = der(cert)?;
    let (_, tbs, _) = der(certificate)?;
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    let (tag, _, mut rest) = der(tbs)?;
    if tag == 0xa0 {
        rest = der(rest)?.2;
    }
    for _ in 0..3 {
        rest = der(rest)?.2;
    }
    let (_, mut names, _) = der(rest)?;
    while !names.is_empty() {
        let (_, mut set, after) = der(names)?;
        names = after;
        while !set.is_empty() {
            let (_, pair, after) = der(set)?;
            set = after;
            let (_, oid, value) = der(pair)?;
            if oid == [0x55, 0x04, 0x03] {
                let (_, value, _) = der(value)?;
                return Some(String::from_utf8_lossy(value).into_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivrstate_model::{AgentEventKind, Envelope, Event, TLibKind};

    use crate::parse::tlog::tests::READY;

    /// The printout without the line after it: nothing says yet that it is complete.
    fn open_printout() -> String {
        READY.split_inclusive('\n').take(7).collect()
    }

    fn session() -> FeedSession {
        FeedSession::new(
            "feed test".into(),
            Some(TServerName::from("TS")),
            Micros(1),
            None,
        )
    }

    fn events(parsed: Vec<Parsed>) -> Vec<Envelope> {
        parsed
            .into_iter()
            .filter_map(|p| match p {
                Parsed::Event { envelope, .. } => Some(envelope),
                _ => None,
            })
            .collect()
    }

    fn is_ready(env: &Envelope) -> bool {
        matches!(&env.event, Event::TLib(t) if matches!(&t.kind, TLibKind::Agent(a) if a.kind == AgentEventKind::Ready))
    }

    #[test]
    fn a_printout_is_held_until_the_next_line_or_a_quiet_period() {
        let mut s = session();
        s.handle_bytes(open_printout().as_bytes());
        assert_eq!(s.format(), Some(Format::Tlog));
        assert!(events(s.poll_parsed()).is_empty(), "the printout may go on");
        s.handle_idle();
        let got = events(s.poll_parsed());
        assert_eq!(got.len(), 1);
        assert!(is_ready(&got[0]));
        assert!(!s.is_finished());
    }

    #[test]
    fn the_end_of_input_completes_the_last_printout_and_the_session() {
        let mut s = session();
        // Split mid-line: the session reassembles lines from chunks of any size.
        let printout = open_printout();
        let (a, b) = printout.as_bytes().split_at(30);
        s.handle_bytes(a);
        s.handle_bytes(b);
        s.handle_eof();
        assert_eq!(events(s.poll_parsed()).len(), 1);
        assert!(s.is_finished());
    }

    #[test]
    fn a_first_line_with_a_brace_makes_the_connection_ndjson() {
        let record = r#"{"time":"2015-08-17T23:16:17.458658Z","recorded":"2015-08-17T23:16:18.000000Z","event":{"TLib":{"tserver":"TS","source_seq":7,"kind":"LinkConnected"}}}"#;
        let mut s = session();
        s.handle_bytes(format!("\n  \n{record}\n").as_bytes());
        assert_eq!(s.format(), Some(Format::Ndjson));
        let parsed = s.poll_parsed();
        assert!(
            matches!(parsed.as_slice(), [Parsed::Event { .. }]),
            "one event, no need to wait for a quiet period: {parsed:?}"
        );
        let mut t = session();
        t.handle_bytes(b"\n");
        assert_eq!(t.format(), None, "blank lines decide nothing");
        t.handle_bytes(READY.as_bytes());
        assert_eq!(t.format(), Some(Format::Tlog));
    }

    #[test]
    fn acks_are_sent_only_after_a_commit_with_the_running_count() {
        let mut s = session();
        s.handle_bytes(open_printout().as_bytes());
        s.handle_idle();
        assert_eq!(events(s.poll_parsed()).len(), 1);
        assert_eq!(s.poll_transmit(), None, "parsed is not stored");
        s.handle_committed(Committed {
            new: 1,
            duplicates: 0,
        });
        assert_eq!(s.poll_transmit().unwrap(), b"{\"committed\":1}\n");
        assert_eq!(s.poll_transmit(), None);
        s.handle_committed(Committed {
            new: 2,
            duplicates: 3,
        });
        s.handle_failed("disk \"full\"");
        assert_eq!(
            String::from_utf8(s.poll_transmit().unwrap()).unwrap(),
            "{\"committed\":6}\n{\"error\":\"disk \\\"full\\\"\"}\n"
        );
    }

    fn tokens() -> Arc<FeedTokens> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            "# who may write\nrecorder s3cret-token-0123456789\n\n",
        )
        .unwrap();
        Arc::new(FeedTokens::from_file(&path).unwrap())
    }

    fn guarded() -> FeedSession {
        FeedSession::new(
            "feed test".into(),
            Some(TServerName::from("TS")),
            Micros(1),
            Some(tokens()),
        )
    }

    #[test]
    fn with_a_token_the_first_line_must_authenticate_and_the_rest_is_parsed() {
        let mut s = guarded();
        s.handle_bytes(format!("AUTH s3cret-token-0123456789\r\n{READY}").as_bytes());
        assert_eq!(s.refusal(), None);
        assert_eq!(s.token_name(), Some("recorder"));
        assert_eq!(events(s.poll_parsed()).len(), 1);
    }

    #[test]
    fn a_wrong_or_missing_token_refuses_the_connection_before_parsing_anything() {
        for input in [
            format!("AUTH wrong-token-0123456789xx\n{READY}"),
            format!("AUTH s3cret-token-012345678\n{READY}"),
            READY.to_owned(),
            format!("auth s3cret-token-0123456789\n{READY}"),
        ] {
            let mut s = guarded();
            s.handle_bytes(input.as_bytes());
            assert!(s.refusal().is_some(), "{input:?}");
            assert!(s.is_finished());
            s.handle_idle();
            s.handle_bytes(READY.as_bytes());
            s.handle_eof();
            assert!(s.poll_parsed().is_empty(), "{input:?}");
            assert_eq!(s.poll_transmit(), None);
        }
        // A first line that never ends is cut short.
        let mut s = guarded();
        s.handle_bytes(&vec![b'A'; 5000]);
        assert!(s.refusal().unwrap().contains("longer"));
        // Closing before authenticating parses nothing either.
        let mut s = guarded();
        s.handle_bytes(b"AUTH s3cret");
        s.handle_eof();
        assert!(s.refusal().is_some());
        assert!(s.poll_parsed().is_empty());
    }

    #[test]
    fn token_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        for (text, says) in [
            ("", "no token"),
            ("short\n", "at least 16"),
            ("a b c\n", "NAME TOKEN"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = FeedTokens::from_file(&path).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
        }
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn the_common_name_is_read_from_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Contact Center");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tserver-recorder-1");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_common_name(cert.der()).as_deref(),
            Some("tserver-recorder-1")
        );
        assert_eq!(subject_common_name(b"\x30\x03\x01"), None);
        assert_eq!(subject_common_name(&cert.der()[..40]), None);
    }

    #[test]
    fn a_closed_socket_takes_the_tservers_it_carried_down_once() {
        let mut s = session();
        assert!(s.socket_closed(Micros(1)).is_empty(), "nothing carried");
        s.handle_bytes(READY.as_bytes());
        s.handle_eof();
        let sent = events(s.poll_parsed());
        s.handle_sent(&sent);
        let closed = s.socket_closed(Micros(5));
        assert_eq!(closed.len(), 1, "{closed:?}");
        assert_eq!(closed[0].time, Micros(5));
        assert!(matches!(
            &closed[0].event,
            Event::TLib(t) if t.kind == TLibKind::SocketClosed && t.tserver.as_str() == "TS" && t.source_seq.is_none()
        ));
        assert!(s.socket_closed(Micros(6)).is_empty(), "once");

        // A T-Server whose last word was EventLinkDisconnected is down already.
        let mut t = session();
        let down = Envelope {
            time: Micros(2),
            recorded: Micros(2),
            event: Event::TLib(TLibEvent {
                tserver: "TS_X".into(),
                source_seq: Some(1),
                kind: TLibKind::LinkDisconnected,
            }),
        };
        t.handle_sent(&sent);
        t.handle_sent(std::slice::from_ref(&down));
        let closed = t.socket_closed(Micros(7));
        assert_eq!(closed.len(), 1, "only TS, not TS_X: {closed:?}");
    }
}
