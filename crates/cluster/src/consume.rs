//! Consuming: the stream in order, from a given sequence, each message decoded into its
//! envelopes.
//!
//! An ordered consumer (ephemeral, no acks, one replica) is the fastest way to read a stream,
//! but client libraries have had gap bugs in them; so every message's stream sequence is
//! checked to be exactly the one expected, and on anything else the subscription is dropped
//! and made again from the expected sequence.

use crate::publish::{parse_lines_header, unescape_source, LINES_HEADER, SOURCE_HEADER};
use crate::{Cluster, ClusterError};
use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures_util::StreamExt;
use ivrstate_model::Envelope;
use ivrstate_store::codec;
use std::time::Duration;
use tokio::sync::mpsc;

/// One message of the stream, decoded.
#[derive(Debug)]
pub struct Delivery {
    pub stream_seq: u64,
    pub subject: String,
    /// Empty when the message could not be decoded (logged; every node skips it alike).
    pub envelopes: Vec<Envelope>,
    /// Where the envelopes came from (its [`SOURCE_HEADER`]; [`UNNAMED_SOURCE`] for a message
    /// without one, as written before the header existed).
    pub source: String,
    /// The line of each envelope in `source`, or empty.
    pub lines: Vec<u64>,
}

/// The source of a stream message that does not say.
pub const UNNAMED_SOURCE: &str = "cluster stream";

impl Delivery {
    /// Decodes a stream message: its envelopes and where they came from.
    pub fn decode(
        stream_seq: u64,
        subject: String,
        payload: &[u8],
        headers: Option<&async_nats::HeaderMap>,
    ) -> Delivery {
        let envelopes = match codec::decode_block(payload) {
            Ok(envs) => envs,
            Err(e) => {
                tracing::error!(stream_seq, %subject, "a stream message is not a batch of events, skipped: {e}");
                Vec::new()
            }
        };
        let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        let source =
            header(SOURCE_HEADER).map_or_else(|| UNNAMED_SOURCE.to_owned(), unescape_source);
        let lines = header(LINES_HEADER)
            .and_then(parse_lines_header)
            .filter(|lines| lines.len() == envelopes.len())
            .unwrap_or_default();
        Delivery {
            stream_seq,
            subject,
            envelopes,
            source,
            lines,
        }
    }
}

const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(250);

/// How long the consumer may be quiet before the stream is asked whether it holds more.
const STALL_CHECK: Duration = Duration::from_secs(2);

/// Sends every message from `from` on, in order, to `tx`, until `tx` is closed.
pub async fn consume(cluster: Cluster, from: u64, tx: mpsc::Sender<Delivery>) {
    let mut next = from.max(1);
    loop {
        match subscribe_and_read(&cluster, &mut next, &tx).await {
            Read::ReceiverGone => return,
            Read::Resubscribe(why) => {
                tracing::warn!(next, "resubscribing to the stream: {why}");
                tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
            }
        }
    }
}

enum Read {
    ReceiverGone,
    Resubscribe(String),
}

async fn subscribe_and_read(
    cluster: &Cluster,
    next: &mut u64,
    tx: &mpsc::Sender<Delivery>,
) -> Read {
    let stream = match cluster.js.get_stream(&cluster.config.stream).await {
        Ok(s) => s,
        Err(e) => return Read::Resubscribe(format!("stream lookup: {e}")),
    };
    let consumer = match stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: *next,
            },
            ..Default::default()
        })
        .await
    {
        Ok(c) => c,
        Err(e) => return Read::Resubscribe(format!("consumer: {e}")),
    };
    let mut messages = match consumer.messages().await {
        Ok(m) => m,
        Err(e) => return Read::Resubscribe(format!("messages: {e}")),
    };
    loop {
        let message = match tokio::time::timeout(STALL_CHECK, messages.next()).await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(_) => {
                // Quiet for a while: normal when nothing is published, a stalled consumer
                // when the stream holds what it has not delivered (its one replica was on a
                // node that died, and recreating it failed while the cluster had no quorum).
                if cluster
                    .try_last_sequence()
                    .await
                    .is_some_and(|last| last >= *next)
                {
                    return Read::Resubscribe(format!(
                        "nothing delivered for {STALL_CHECK:?} while the stream holds {next}"
                    ));
                }
                continue;
            }
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => return Read::Resubscribe(format!("delivery: {e}")),
        };
        let seq = match message.info() {
            Ok(info) => info.stream_sequence,
            Err(e) => return Read::Resubscribe(format!("message without metadata: {e}")),
        };
        if seq < *next {
            // Delivered again after a resubscription: already handed on.
            continue;
        }
        if seq != *next {
            return Read::Resubscribe(format!("expected stream sequence {next}, got {seq}"));
        }
        let delivery = Delivery::decode(
            seq,
            message.subject.to_string(),
            &message.payload,
            message.headers.as_ref(),
        );
        if tx.send(delivery).await.is_err() {
            return Read::ReceiverGone;
        }
        *next = seq + 1;
    }
    Read::Resubscribe("the subscription ended".into())
}

/// What a subject holds: its events in stream order, and the stream sequence of its last
/// message (0 when it has none), which a guarded publish names as the state it builds on (see
/// [`crate::publish::publish_after`]).
#[derive(Debug, Default)]
pub struct SubjectRead {
    pub envelopes: Vec<Envelope>,
    pub last_seq: u64,
}

/// Every event stored under `subject` (e.g. `<stream>.config`), in stream order: what the
/// stream holds now, read once. Retried for a while: a stream just created (or a cluster just
/// restarted) may time out a consumer's creation before its group has settled.
pub async fn read_subject(cluster: &Cluster, subject: &str) -> Result<SubjectRead, ClusterError> {
    let started = std::time::Instant::now();
    loop {
        match read_subject_once(cluster, subject).await {
            Ok(envelopes) => return Ok(envelopes),
            Err(e) if started.elapsed() < crate::STREAM_READY_WITHIN => {
                tracing::info!("reading {subject} again: {e}");
                tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn read_subject_once(cluster: &Cluster, subject: &str) -> Result<SubjectRead, ClusterError> {
    let failed = |reason: String| ClusterError::Stream {
        stream: cluster.config.stream.clone(),
        reason,
    };
    let stream = cluster
        .js
        .get_stream(&cluster.config.stream)
        .await
        .map_err(|e| failed(format!("lookup: {e}")))?;
    let mut consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject.to_owned(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| failed(format!("consumer on {subject}: {e}")))?;
    let mut left = consumer
        .info()
        .await
        .map_err(|e| failed(format!("consumer on {subject}: {e}")))?
        .num_pending;
    let mut out = SubjectRead::default();
    if left == 0 {
        return Ok(out);
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| failed(format!("reading {subject}: {e}")))?;
    while left > 0 {
        let message = match messages.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(failed(format!("reading {subject}: {e}"))),
            None => return Err(failed(format!("reading {subject}: the subscription ended"))),
        };
        let envelopes = codec::decode_block(&message.payload).map_err(|e| {
            failed(format!(
                "a message on {subject} is not a batch of events: {e}"
            ))
        })?;
        out.last_seq = message
            .info()
            .map_err(|e| failed(format!("a message on {subject} without metadata: {e}")))?
            .stream_sequence;
        out.envelopes.extend(envelopes);
        left -= 1;
    }
    Ok(out)
}
