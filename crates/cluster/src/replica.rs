//! The node's store as a replica of the stream: which stream message was applied last, and
//! recovery after a crash.
//!
//! The checkpoint (`cluster:applied` in the store's `replica` tree: last stream sequence applied, and
//! the log's last seq at that moment) is written after the append of those messages is
//! durable, and becomes durable with the next flush. sled recovers a prefix of what was
//! written, so a checkpoint that survived implies the records before it did. A crash can
//! therefore leave records newer than the checkpoint (appended, checkpoint not yet on disk),
//! never a checkpoint ahead of the records.
//!
//! Those records came from the messages after the checkpoint, which are delivered again. The
//! records are the fresh envelopes of those messages in order (T-Server events the log's dedup
//! dropped are not among them), so walking the messages' envelopes beside them: an envelope
//! equal to the next such record is already applied; one that is not was dropped as a
//! duplicate then. (It cannot have been fresh: the fresh ones are exactly the records, in
//! order.) Once the records are used up, envelopes are appended as usual. So the log after
//! recovery is the log the node would have written without the crash, byte for byte, whatever
//! the kind of event (configuration events and client requests have no dedup key).

use crate::consume::Delivery;
use crate::ClusterError;
use ivrstate_model::{Envelope, Seq};
use ivrstate_store::Store;
use std::collections::VecDeque;

/// The metadata key of the checkpoint.
pub const CHECKPOINT_KEY: &[u8] = b"cluster:applied";

/// Where the replica is: the last stream message applied and the log's last seq then.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub stream_seq: u64,
    pub log_seq: Seq,
}

impl Checkpoint {
    fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.stream_seq.to_be_bytes());
        b[8..].copy_from_slice(&self.log_seq.to_be_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Option<Checkpoint> {
        let stream_seq = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let log_seq = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
        Some(Checkpoint {
            stream_seq,
            log_seq,
        })
    }

    /// The checkpoint stored in `store`, if any.
    pub fn read(store: &Store) -> Result<Option<Checkpoint>, ClusterError> {
        match store.replica_get(CHECKPOINT_KEY)? {
            None => Ok(None),
            Some(bytes) => Checkpoint::from_bytes(&bytes).map(Some).ok_or_else(|| {
                ClusterError::Replica(format!(
                    "{}: the cluster checkpoint is damaged ({} bytes)",
                    store.path().display(),
                    bytes.len()
                ))
            }),
        }
    }
}

/// What to append of some deliveries.
#[derive(Debug)]
pub struct ToAppend<'a> {
    pub envelopes: Vec<Envelope>,
    /// Runs over `envelopes`: how many, their message's source, their lines (or empty).
    pub sources: Vec<(usize, &'a str, Vec<u64>)>,
    /// The last stream sequence of the deliveries.
    pub last: u64,
}

/// The replica's side of applying the stream.
pub struct Replica {
    checkpoint: Checkpoint,
    /// Records after the checkpoint (left by a crash), not yet matched with their messages.
    unmatched: VecDeque<Envelope>,
}

impl Replica {
    /// Opens the replica state of `store`. A store that holds events but no checkpoint was
    /// written outside the cluster; applying the stream after them would make a log no other
    /// node has, so it is refused.
    pub fn open(store: &Store) -> Result<Replica, ClusterError> {
        let last = store.log().last_seq();
        let checkpoint = match Checkpoint::read(store)? {
            Some(c) => c,
            None if last == 0 => {
                // Marks the store as a replica before anything is appended: a crash after the
                // first append and before its checkpoint then leaves a store that is still
                // known to be one.
                let start = Checkpoint::default();
                store.replica_put(CHECKPOINT_KEY, &start.to_bytes())?;
                store.flush()?;
                start
            }
            None => {
                return Err(ClusterError::Replica(format!(
                    "{} holds {last} events that did not come from a cluster stream; a cluster \
                     node needs an empty store (or one it used as a cluster node before)",
                    store.path().display()
                )))
            }
        };
        if checkpoint.log_seq > last {
            return Err(ClusterError::Replica(format!(
                "{}: the cluster checkpoint names log seq {} but the log ends at {last}",
                store.path().display(),
                checkpoint.log_seq
            )));
        }
        let mut unmatched = VecDeque::new();
        if checkpoint.log_seq < last {
            for record in store.log().read(checkpoint.log_seq + 1, last) {
                unmatched.push_back(record?.envelope);
            }
            tracing::info!(
                records = unmatched.len(),
                stream_seq = checkpoint.stream_seq,
                "records newer than the cluster checkpoint (a crash after an append): matching them with the stream"
            );
        }
        Ok(Replica {
            checkpoint,
            unmatched,
        })
    }

    pub fn checkpoint(&self) -> Checkpoint {
        self.checkpoint
    }

    /// The stream sequence to read from.
    pub fn next_stream_seq(&self) -> u64 {
        self.checkpoint.stream_seq + 1
    }

    /// The envelopes of `deliveries` (in stream order, starting at [`Self::next_stream_seq`])
    /// still to append, and the last stream sequence among them. Deliveries at or below the
    /// checkpoint are ignored; a gap is an error (the consumer guarantees none).
    pub fn to_append(
        &mut self,
        deliveries: &[Delivery],
    ) -> Result<(Vec<Envelope>, u64), ClusterError> {
        let all = self.to_append_from(deliveries)?;
        Ok((all.envelopes, all.last))
    }

    /// [`Self::to_append`], with where each envelope came from (its message's source).
    pub fn to_append_from<'a>(
        &mut self,
        deliveries: &'a [Delivery],
    ) -> Result<ToAppend<'a>, ClusterError> {
        let mut out = Vec::new();
        let mut sources = Vec::new();
        let mut last = self.checkpoint.stream_seq;
        for d in deliveries {
            if d.stream_seq <= last {
                continue;
            }
            if d.stream_seq != last + 1 {
                return Err(ClusterError::Replica(format!(
                    "stream message {} after {last}: a gap",
                    d.stream_seq
                )));
            }
            last = d.stream_seq;
            let (before, mut lines) = (out.len(), Vec::new());
            for (i, env) in d.envelopes.iter().enumerate() {
                match self.unmatched.front() {
                    Some(front) if front == env => {
                        self.unmatched.pop_front();
                    }
                    // A duplicate the log dropped when it was first appended.
                    Some(_) => {}
                    None => {
                        out.push(env.clone());
                        lines.extend(d.lines.get(i));
                    }
                }
            }
            if out.len() > before {
                sources.push((out.len() - before, d.source.as_str(), lines));
            }
        }
        Ok(ToAppend {
            envelopes: out,
            sources,
            last,
        })
    }

    /// Records that everything through `stream_seq` is applied and the log ends at `log_seq`.
    /// Call only after the append is durable; it becomes durable with the next flush.
    pub fn applied(
        &mut self,
        store: &Store,
        stream_seq: u64,
        log_seq: Seq,
    ) -> Result<(), ClusterError> {
        let checkpoint = Checkpoint {
            stream_seq,
            log_seq,
        };
        store.replica_put(CHECKPOINT_KEY, &checkpoint.to_bytes())?;
        self.checkpoint = checkpoint;
        Ok(())
    }
}
