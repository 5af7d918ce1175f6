//! The TCP feed (`serve --feed-listen`): a connection sends T-Server printouts or NDJSON lines
//! and gets back one line `{"committed":N}` (the running count for that connection) per batch
//! once that batch is stored.
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
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

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

impl FeedSession {
    /// `name` names the connection in parse errors; `recorded` stamps its events.
    pub fn new(name: String, tserver: Option<TServerName>, recorded: Micros) -> Self {
        FeedSession {
            parser: TlogParser::new(&name, tserver, recorded),
            name,
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
        self.splitter.push(bytes, &mut self.items);
        self.parse_items();
    }

    /// The connection has been quiet: end the printout in progress.
    pub fn handle_idle(&mut self) {
        self.parser.finish(&mut self.parsed);
    }

    /// The peer closed its side: the partial last line and the printout in progress are
    /// complete.
    pub fn handle_eof(&mut self) {
        self.splitter.flush_partial(&mut self.items);
        self.parse_items();
        self.parser.finish(&mut self.parsed);
        self.finished = true;
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
        for item in self.items.drain(..) {
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
}

/// Accepts feed connections until the task is dropped.
pub async fn listen(listener: TcpListener, config: FeedConfig) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("feed accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let config = config.clone();
        tokio::spawn(async move {
            let ended = serve_connection(stream, peer, &config).await;
            // The connection is closed here, whichever way it ended.
            if let Err(e) = ended {
                tracing::warn!("feed {peer}: {e}");
            }
        });
    }
}

/// Runs one feed connection to its end: reads, appends each batch through the appender and
/// acknowledges it only once it is stored.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    config: &FeedConfig,
) -> Result<(), FeedError> {
    let mut session = FeedSession::new(format!("feed {peer}"), config.tserver.clone(), now());
    let ended = drive(&mut stream, &mut session, config).await;
    // Closed or failed: the T-Servers it carried are gone with it.
    let closed = session.socket_closed(now());
    if !closed.is_empty() {
        tracing::info!(
            "feed {peer} closed: {} T-Server(s) it carried now Unavailable",
            closed.len()
        );
        if config.jobs.send(Job::unacknowledged(closed)).await.is_err() {
            tracing::warn!(
                "feed {peer}: the link-down events were not recorded: the store is shutting down"
            );
        }
    }
    ended
}

async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    session: &mut FeedSession,
    config: &FeedConfig,
) -> Result<(), FeedError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(IDLE_FLUSH, stream.read(&mut buf)).await {
            Ok(Ok(0)) => session.handle_eof(),
            Ok(Ok(n)) => session.handle_bytes(buf.get(..n).unwrap_or_default()),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => session.handle_idle(),
        }
        let envelopes = config.counters.count(session.poll_parsed());
        if !envelopes.is_empty() {
            session.handle_sent(&envelopes);
            let (ack_tx, ack_rx) = oneshot::channel();
            config
                .jobs
                .send(Job {
                    envelopes,
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
        FeedSession::new("feed test".into(), Some(TServerName::from("TS")), Micros(1))
    }

    fn events(parsed: Vec<Parsed>) -> Vec<Envelope> {
        parsed
            .into_iter()
            .filter_map(|p| match p {
                Parsed::Event(e) => Some(e),
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
            matches!(parsed.as_slice(), [Parsed::Event(_)]),
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
