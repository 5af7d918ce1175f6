//! Publishing: batches of envelopes into the stream, reported stored only once JetStream
//! acknowledged them.
//!
//! - A message is up to [`MAX_MESSAGE_RECORDS`] consecutive envelopes of one source (subject
//!   `<stream>.ts.<T-Server>`, `<stream>.config`, `<stream>.requests`, `<stream>.anomaly`),
//!   encoded as a store block, with where they came from in two headers (what the store's
//!   provenance records): [`SOURCE_HEADER`], the source in words, escaped, and
//!   [`LINES_HEADER`], the line of each envelope in it (when it is a file), as the store's
//!   varint encoding in hex. Its `Nats-Msg-Id` is the SHA-256 of its subject, bytes and
//!   headers, so the same batch published twice (a retry, an `ingest` run again) is stored
//!   once.
//! - Throughput without one fsync round trip per message: the [`Pipeline`] sends messages in
//!   order and keeps up to [`WINDOW`] acknowledgements outstanding; JetStream (with
//!   `sync_interval: always`) groups what arrives while it syncs.
//! - A timeout is never a failure: the message may have been stored. The pipeline re-sends the
//!   first unacknowledged message and every one after it, in order, same ids and same bytes,
//!   until the cluster acknowledges them (duplicates are dropped by the Msg-Id).

use crate::{Cluster, ClusterError};
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use ivrstate_model::{Envelope, Event};
use ivrstate_store::codec;
use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Envelopes per message at most (a store block's limit).
pub const MAX_MESSAGE_RECORDS: usize = codec::MAX_BLOCK_RECORDS;

/// Messages sent and not yet acknowledged, at most.
pub const WINDOW: usize = 64;

/// Pause before re-sending after a failed or timed-out publish.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The header that says where a message's envelopes came from: the source as the store records
/// it ("file /var/log/ts.log", "feed 10.0.0.5:51234 #3 (token recorder)", ...), escaped by
/// [`escape_source`] (a header value is one line of printable text).
pub const SOURCE_HEADER: &str = "Ivrstate-Source";

/// The header with the line of each envelope in its source, when it has lines: the store's
/// encoding of them (`ivrstate_store::encode_lines`) in hex.
pub const LINES_HEADER: &str = "Ivrstate-Lines";

/// One message ready to publish: the same id, bytes and headers on every attempt.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub subject: String,
    pub id: String,
    pub payload: Bytes,
    pub records: usize,
    /// The [`SOURCE_HEADER`] value.
    pub source: String,
    /// The [`LINES_HEADER`] value, if the envelopes have lines.
    pub lines: Option<String>,
}

/// A source as a header value: bytes other than printable ASCII (and `%`, and the space, which
/// NATS may trim at the ends) as `%XX`.
pub fn escape_source(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    for &b in source.as_bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The source [`escape_source`] escaped; a `%` not followed by two hex digits stays as it is.
pub fn unescape_source(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lines as a [`LINES_HEADER`] value.
pub fn lines_header(lines: &[u64]) -> String {
    let mut bytes = Vec::new();
    ivrstate_store::encode_lines(lines, &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The lines of a [`LINES_HEADER`] value; `None` if it is not one.
pub fn parse_lines_header(value: &str) -> Option<Vec<u64>> {
    let bytes: Vec<u8> = value
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .filter(|h| h.len() == 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<_>>()?;
    ivrstate_store::decode_lines(&bytes)
}

/// What JetStream said about a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    pub stream_seq: u64,
    /// The Msg-Id was already in the stream: nothing new was stored.
    pub duplicate: bool,
}

/// How a batch went: envelopes newly in the stream and envelopes of duplicate messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    pub new: u64,
    pub duplicates: u64,
    /// The stream sequence of the batch's last message (0 for an empty batch).
    pub last_stream_seq: u64,
}

/// The subject token of an envelope's source.
fn source_token(env: &Envelope) -> String {
    match &env.event {
        Event::TLib(t) => {
            // Subject tokens may not hold '.', '*', '>' or white space; other bytes are kept
            // as they are, anything else becomes '_' (the subject only groups, it identifies
            // nothing: the envelope carries its T-Server).
            let name: String = t
                .tserver
                .as_str()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("ts.{name}")
        }
        Event::Config(_) => "config".into(),
        Event::Request(_) => "requests".into(),
        Event::Anomaly(_) => "anomaly".into(),
    }
}

/// Splits envelopes into messages: runs of one subject, at most [`MAX_MESSAGE_RECORDS`] each,
/// each saying it came from `source` (with the lines of its envelopes, if `lines` has one per
/// envelope).
pub fn messages(
    stream: &str,
    envelopes: &[Envelope],
    source: &str,
    lines: &[u64],
) -> Result<Vec<Outgoing>, ClusterError> {
    let source = escape_source(source);
    let lines = (lines.len() == envelopes.len()).then_some(lines);
    let mut out = Vec::new();
    let mut start = 0;
    while start < envelopes.len() {
        let token = source_token(&envelopes[start]);
        let mut end = start + 1;
        while end < envelopes.len()
            && end - start < MAX_MESSAGE_RECORDS
            && source_token(&envelopes[end]) == token
        {
            end += 1;
        }
        let subject = format!("{stream}.{token}");
        let payload =
            codec::encode_block(&envelopes[start..end]).map_err(|e| ClusterError::Encode {
                what: subject.clone(),
                reason: e.to_string(),
            })?;
        let lines = lines.and_then(|l| l.get(start..end)).map(lines_header);
        out.push(Outgoing {
            id: message_id(&subject, &payload, &source, lines.as_deref()),
            subject,
            payload: Bytes::from(payload),
            records: end - start,
            source: source.clone(),
            lines,
        });
        start = end;
    }
    Ok(out)
}

/// The `Nats-Msg-Id`: SHA-256 of subject, bytes and the source headers, in hex.
pub fn message_id(subject: &str, payload: &[u8], source: &str, lines: Option<&str>) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(subject.as_bytes());
    ctx.update(&[0]);
    ctx.update(payload);
    ctx.update(&[0]);
    ctx.update(source.as_bytes());
    ctx.update(&[0]);
    ctx.update(lines.unwrap_or_default().as_bytes());
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

type AckFuture = Pin<
    Box<
        dyn Future<
                Output = Result<
                    async_nats::jetstream::publish::PublishAck,
                    async_nats::jetstream::context::PublishError,
                >,
            > + Send,
    >,
>;

/// A batch handed to the [`Pipeline`], with where to report it.
pub struct Batch {
    pub messages: Vec<Outgoing>,
    pub done: oneshot::Sender<Published>,
}

struct InFlight {
    message: Outgoing,
    ack: Option<AckFuture>,
    /// Index of the batch in the pipeline's queue of batches this message belongs to.
    batch: u64,
}

/// Publishes batches in order with many acknowledgements outstanding; see the module doc.
pub struct Pipeline {
    tx: mpsc::Sender<Batch>,
}

impl Pipeline {
    /// Starts the pipeline's task on the current runtime.
    pub fn start(cluster: &Cluster) -> Pipeline {
        let (tx, rx) = mpsc::channel(WINDOW);
        tokio::spawn(run(cluster.clone(), rx));
        Pipeline { tx }
    }

    /// Publishes `envelopes`, which came from `source` (at `lines`, one per envelope, or
    /// none); the returned receiver resolves once JetStream acknowledged every message of them
    /// (never before; it waits as long as the cluster is unavailable).
    pub async fn publish(
        &self,
        stream: &str,
        envelopes: &[Envelope],
        source: &str,
        lines: &[u64],
    ) -> Result<oneshot::Receiver<Published>, ClusterError> {
        let messages = messages(stream, envelopes, source, lines)?;
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Batch { messages, done })
            .await
            .map_err(|_| ClusterError::Replica("the publishing task has stopped".into()))?;
        Ok(rx)
    }
}

struct Pending {
    id: u64,
    left: usize,
    published: Published,
    done: Option<oneshot::Sender<Published>>,
}

/// A message as JetStream gets it: bytes, Msg-Id and source headers.
fn to_publish(m: &Outgoing) -> PublishMessage {
    let publish = PublishMessage::build()
        .payload(m.payload.clone())
        .message_id(m.id.as_str())
        .header(SOURCE_HEADER, m.source.as_str());
    match &m.lines {
        Some(lines) => publish.header(LINES_HEADER, lines.as_str()),
        None => publish,
    }
}

async fn send(cluster: &Cluster, m: &Outgoing) -> Option<AckFuture> {
    match cluster
        .js
        .send_publish(m.subject.clone(), to_publish(m))
        .await
    {
        Ok(ack) => Some(ack.into_future()),
        Err(e) => {
            tracing::warn!(subject = %m.subject, id = %m.id, "publish not sent (will retry): {e}");
            None
        }
    }
}

async fn run(cluster: Cluster, mut rx: mpsc::Receiver<Batch>) {
    let mut flight: VecDeque<InFlight> = VecDeque::new();
    let mut batches: VecDeque<Pending> = VecDeque::new();
    let mut next_batch = 0u64;
    let mut open = true;
    // Failed attempts in a row (logged on the first and every 20th: the cluster may be down
    // for a long time, and each retry is 250 ms apart).
    let mut failures = 0u32;
    loop {
        // Report the batches whose every message is acknowledged, in order.
        while batches.front().is_some_and(|b| b.left == 0) {
            if let Some(mut b) = batches.pop_front() {
                if let Some(done) = b.done.take() {
                    let _ = done.send(b.published);
                }
            }
        }
        if !open && flight.is_empty() {
            return;
        }
        let room = flight.len() < WINDOW;
        let front = flight.front_mut();
        tokio::select! {
            biased;
            result = async {
                match front {
                    Some(f) => match f.ack.as_mut() {
                        Some(ack) => Some(ack.await),
                        None => Some(Err(async_nats::jetstream::context::PublishError::new(
                            async_nats::jetstream::context::PublishErrorKind::Other,
                        ))),
                    },
                    None => std::future::pending().await,
                }
            } => {
                match result {
                    Some(Ok(ack)) => {
                        if failures > 0 {
                            tracing::info!(attempts = failures + 1, "acknowledged again");
                            failures = 0;
                        }
                        if let Some(f) = flight.pop_front() {
                            if let Some(b) = batches.iter_mut().find(|b| b.id == f.batch) {
                                b.left -= 1;
                                if ack.duplicate {
                                    b.published.duplicates += f.message.records as u64;
                                } else {
                                    b.published.new += f.message.records as u64;
                                }
                                b.published.last_stream_seq =
                                    b.published.last_stream_seq.max(ack.sequence);
                            }
                        }
                    }
                    Some(Err(e)) => {
                        failures += 1;
                        if let Some(f) = flight.front().filter(|_| failures % 20 == 1) {
                            tracing::warn!(
                                subject = %f.message.subject, id = %f.message.id,
                                "not acknowledged (re-sending it and the {} after it): {e}",
                                flight.len() - 1
                            );
                        }
                        tokio::time::sleep(RETRY_PAUSE).await;
                        // Same ids, same bytes, same order: whatever was stored is dropped
                        // as a duplicate.
                        for f in flight.iter_mut() {
                            f.ack = send(&cluster, &f.message).await;
                        }
                    }
                    None => {}
                }
            }
            batch = rx.recv(), if room && open => {
                match batch {
                    Some(batch) => {
                        let id = next_batch;
                        next_batch += 1;
                        let left = batch.messages.len();
                        batches.push_back(Pending {
                            id,
                            left,
                            published: Published::default(),
                            done: Some(batch.done),
                        });
                        for message in batch.messages {
                            let ack = send(&cluster, &message).await;
                            flight.push_back(InFlight { message, ack, batch: id });
                        }
                    }
                    None => open = false,
                }
            }
        }
    }
}

/// How a guarded publish ([`publish_after`]) went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarded {
    /// Every message is in the stream, right after the sequence named (or was already there:
    /// the same bytes published before).
    Stored(Published),
    /// Someone else published on the subject after the sequence named: this message and the
    /// ones after it were refused. Read the subject again and decide again.
    Moved,
}

/// Publishes `envelopes` (all of one subject, from `source`) only if the subject's last
/// message is still stream sequence `after` (0: the subject is empty): compare-and-set for a
/// writer that computed them from what the subject held, as `config apply` computes its
/// changes from the configuration events. JetStream checks the
/// `Nats-Expected-Last-Subject-Sequence` header as it stores, so of two writers who read the
/// same state, one is refused ([`Guarded::Moved`]) instead of both landing.
///
/// Messages go one at a time, each guarded by the sequence of the one before. A timeout is
/// retried with the same bytes and header (a copy already stored is a duplicate by its
/// Msg-Id); a refusal is final.
pub async fn publish_after(
    cluster: &Cluster,
    envelopes: &[Envelope],
    source: &str,
    after: u64,
) -> Result<Guarded, ClusterError> {
    use async_nats::jetstream::context::PublishErrorKind;
    let messages = messages(&cluster.config.stream, envelopes, source, &[])?;
    let subject = messages
        .first()
        .map(|m| m.subject.as_str())
        .unwrap_or_default();
    if let Some(m) = messages.iter().find(|m| m.subject != subject) {
        return Err(ClusterError::Stream {
            stream: cluster.config.stream.clone(),
            reason: format!(
                "a guarded publish is for one subject, not {subject} and {}",
                m.subject
            ),
        });
    }
    let mut published = Published::default();
    let mut expected = after;
    for m in &messages {
        let mut failures = 0u32;
        let ack = loop {
            let publish = to_publish(m).expected_last_subject_sequence(expected);
            let attempt = match cluster.js.send_publish(m.subject.clone(), publish).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match attempt {
                Ok(ack) => break ack,
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    return Ok(Guarded::Moved)
                }
                Err(e) => {
                    failures += 1;
                    if failures % 20 == 1 {
                        tracing::warn!(subject = %m.subject, id = %m.id, "not acknowledged (re-sending it): {e}");
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        };
        if ack.duplicate {
            published.duplicates += m.records as u64;
        } else {
            published.new += m.records as u64;
        }
        published.last_stream_seq = ack.sequence;
        expected = ack.sequence;
    }
    Ok(Guarded::Stored(published))
}
