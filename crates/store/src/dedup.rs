//! Idempotent ingest: telling an event already in the log from one that only shares its number.
//!
//! A T-Server numbers its events (`AttributeEventSequenceNumber`), but a restarted T-Server
//! starts again, so the same (T-Server, number) can name two different events. An event counts
//! as already stored only if a stored event has the same T-Server, number, time and content
//! (everything but `recorded`); anything else is appended, so nothing is ever dropped.
//!
//! Space: one index entry per block and T-Server, in the log tree itself so the same atomic
//! batch writes blocks and entries: key `b'D' + u32 BE name length + name + min number (u64 BE) +
//! block first seq (u64 BE)`, value = max number (u64 BE). The length prefix keeps names that are
//! prefixes of each other (or contain any byte) apart.
//!
//! Time: the entries are held in memory per T-Server as *chains* of disjoint ranges sorted by
//! their minimum (a T-Server that never restarts has one chain; each restart starts at most one
//! more). A number above the T-Server's high watermark is new without any lookup (the fast path
//! of normal ingest). Otherwise each chain is binary-searched for a range holding the number,
//! and only those blocks are decoded (through a small cache) and compared.

use ivrstate_model::{Envelope, Seq, TServerName};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// The index-entry prefix in the log tree.
pub(crate) const DEDUP_PREFIX: u8 = b'D';

/// Source numbers `min..=max` of one T-Server appear in the block starting at `block`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SourceRange {
    pub min: u64,
    pub max: u64,
    pub block: Seq,
}

#[derive(Default)]
struct TsRanges {
    high: u64,
    /// Each chain: disjoint ranges sorted by `min`.
    chains: Vec<Vec<SourceRange>>,
}

/// The in-memory form of every index entry.
#[derive(Default)]
pub(crate) struct DedupIndex {
    by_tserver: HashMap<TServerName, TsRanges, ahash::RandomState>,
}

impl DedupIndex {
    pub fn insert(&mut self, tserver: &TServerName, r: SourceRange) {
        let ts = match self.by_tserver.get_mut(tserver.as_str()) {
            Some(ts) => ts,
            None => self.by_tserver.entry(tserver.clone()).or_default(),
        };
        ts.high = ts.high.max(r.max);
        // Most appends extend a chain at its end; otherwise put the range wherever it fits
        // disjointly, and open a new chain only when it fits nowhere.
        for chain in ts.chains.iter_mut() {
            let pos = chain.partition_point(|x| x.min < r.min);
            let after_prev = pos == 0 || chain[pos - 1].max < r.min;
            let before_next = !matches!(chain.get(pos), Some(n) if n.min <= r.max);
            if after_prev && before_next {
                chain.insert(pos, r);
                return;
            }
        }
        ts.chains.push(vec![r]);
    }

    /// The highest source number stored for this T-Server.
    pub fn high(&self, tserver: &str) -> Option<u64> {
        self.by_tserver.get(tserver).map(|t| t.high)
    }

    /// The first seqs of the blocks that may hold `source_seq` of `tserver`, into `out`.
    pub fn candidates(&self, tserver: &str, source_seq: u64, out: &mut Vec<Seq>) {
        out.clear();
        let Some(ts) = self.by_tserver.get(tserver) else {
            return;
        };
        for chain in &ts.chains {
            let pos = chain.partition_point(|x| x.min <= source_seq);
            if pos > 0 && chain[pos - 1].max >= source_seq {
                out.push(chain[pos - 1].block);
            }
        }
        // Newest first: a re-fed recent file finds its match in the first block it loads.
        out.sort_unstable_by(|a, b| b.cmp(a));
    }
}

/// The index entries a block needs: per T-Server, the min and max source number in it.
pub(crate) fn block_ranges<'a, I>(envs: I) -> Vec<(&'a TServerName, u64, u64)>
where
    I: IntoIterator<Item = &'a Envelope>,
{
    let mut out: Vec<(&TServerName, u64, u64)> = Vec::new();
    for env in envs {
        let Some((ts, s)) = env.source_key() else {
            continue;
        };
        match out.iter_mut().find(|(t, _, _)| *t == ts) {
            Some(r) => {
                r.1 = r.1.min(s);
                r.2 = r.2.max(s);
            }
            None => out.push((ts, s, s)),
        }
    }
    out
}

pub(crate) fn entry_key(tserver: &str, min: u64, block: Seq) -> Vec<u8> {
    let name = tserver.as_bytes();
    let mut key = Vec::with_capacity(21 + name.len());
    key.push(DEDUP_PREFIX);
    // Names come from logs; they are short, and a name over 4 GiB cannot reach here.
    key.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_be_bytes());
    key.extend_from_slice(name);
    key.extend_from_slice(&min.to_be_bytes());
    key.extend_from_slice(&block.to_be_bytes());
    key
}

/// Parses an index entry; `None` if its bytes are not one.
pub(crate) fn parse_entry(key: &[u8], value: &[u8]) -> Option<(TServerName, SourceRange)> {
    let rest = key.strip_prefix(&[DEDUP_PREFIX])?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(rest.get(4..4 + len)?).ok()?;
    let tail = rest.get(4 + len..)?;
    if tail.len() != 16 {
        return None;
    }
    let min = u64::from_be_bytes(tail[..8].try_into().ok()?);
    let block = u64::from_be_bytes(tail[8..].try_into().ok()?);
    let max = u64::from_be_bytes(value.try_into().ok()?);
    Some((TServerName::from(name), SourceRange { min, max, block }))
}

/// True if `b` is the same event as `a`: everything but the time it was recorded.
pub(crate) fn same_event(a: &Envelope, b: &Envelope) -> bool {
    a.time == b.time && a.event == b.event
}

/// A decoded block with its events indexed by source number.
pub(crate) struct DecodedBlock {
    first: Seq,
    envs: Vec<Envelope>,
    by_source_seq: HashMap<u64, Vec<u32>, ahash::RandomState>,
}

impl DecodedBlock {
    pub fn new(first: Seq, envs: Vec<Envelope>) -> Self {
        let mut by_source_seq: HashMap<u64, Vec<u32>, ahash::RandomState> = HashMap::default();
        for (i, env) in envs.iter().enumerate() {
            if let Some((_, s)) = env.source_key() {
                by_source_seq.entry(s).or_default().push(i as u32);
            }
        }
        DecodedBlock {
            first,
            envs,
            by_source_seq,
        }
    }

    /// The seq of the stored copy of `env`, if this block holds one.
    pub fn find(&self, env: &Envelope, source_seq: u64) -> Option<Seq> {
        self.by_source_seq
            .get(&source_seq)?
            .iter()
            .find(|&&i| same_event(&self.envs[i as usize], env))
            .map(|&i| self.first + Seq::from(i))
    }
}

/// The last few blocks decoded for dedup (a re-fed file hits the same blocks over and over).
pub(crate) struct BlockCache {
    blocks: VecDeque<Arc<DecodedBlock>>,
    capacity: usize,
}

impl BlockCache {
    pub fn new(capacity: usize) -> Self {
        BlockCache {
            blocks: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    pub fn get(&self, first: Seq) -> Option<Arc<DecodedBlock>> {
        self.blocks.iter().find(|b| b.first == first).cloned()
    }

    pub fn put(&mut self, block: Arc<DecodedBlock>) {
        if self.blocks.len() == self.capacity {
            self.blocks.pop_front();
        }
        self.blocks.push_back(block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_names_that_are_prefixes_stay_apart() {
        let k = entry_key("TS", 5, 100);
        assert_eq!(
            parse_entry(&k, &9u64.to_be_bytes()),
            Some((
                TServerName::from("TS"),
                SourceRange {
                    min: 5,
                    max: 9,
                    block: 100
                }
            ))
        );
        assert!(!entry_key("TS_SIP", 0, 0).starts_with(&entry_key("TS", 0, 0)[..7]));
        assert_eq!(parse_entry(b"Dxx", b""), None);
    }

    #[test]
    fn candidates_cover_every_range_holding_the_number_across_restarts() {
        let mut idx = DedupIndex::default();
        let ts = TServerName::from("TS");
        idx.insert(
            &ts,
            SourceRange {
                min: 100,
                max: 199,
                block: 1,
            },
        );
        idx.insert(
            &ts,
            SourceRange {
                min: 200,
                max: 299,
                block: 101,
            },
        );
        // The T-Server restarted: numbers start again.
        idx.insert(
            &ts,
            SourceRange {
                min: 1,
                max: 150,
                block: 201,
            },
        );
        // A block spanning a restart covers a wide range.
        idx.insert(
            &ts,
            SourceRange {
                min: 120,
                max: 400,
                block: 351,
            },
        );
        assert_eq!(idx.high("TS"), Some(400));
        let mut out = Vec::new();
        idx.candidates("TS", 130, &mut out);
        assert_eq!(out, vec![351, 201, 1]);
        idx.candidates("TS", 250, &mut out);
        assert_eq!(out, vec![351, 101]);
        idx.candidates("TS", 50, &mut out);
        assert_eq!(out, vec![201]);
        idx.candidates("OTHER", 50, &mut out);
        assert!(out.is_empty());
    }
}
