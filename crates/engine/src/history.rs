//! The persisted history: what each entity's state was, from when. Everything here lives in the
//! `derived` tree and is recomputable from the log.
//!
//! Agents change with almost every event, so their history is stored in **chunks** of up to
//! [`CHUNK_LEN`] states (one sled entry per chunk, not per event: a 1 M-event log gives ~30 k
//! entries, small enough for sled's cache, which keeps open, as-of and memory cheap):
//!
//! - `C` + agent entity + start time + start seq of the chunk's first state -> the states of one
//!   (T-Server, DN), oldest first. The fold keeps each DN's `since` monotonic (an out-of-order
//!   event is folded as if it happened at the last change), so within a DN the chunks partition
//!   time and as-of is one reverse range lookup plus a search inside one chunk;
//! - `G` + agent id + seq of the chunk's first state -> the same states, per agent id, in log
//!   order (an agent may use several DNs and T-Servers): `history --agent` and `audit` read the
//!   agent's own chunks only.
//!
//! Servers and ports change rarely and may be changed by two sources (configuration and the
//! T-Server's link), so they keep one entry per change, ordered by the record's time:
//! `T` + entity + time + seq -> [`EntityState`].
//!
//! A chunk is appended to until full; the chunk's final bytes depend only on the sequence of
//! states, never on how catch-up was batched, so a rebuild reproduces them exactly.

use crate::keys;
use crate::packs::Packs;
use crate::{decode, encode, Result};
use ivrstate_model::{IvrName, Micros, PortNum, Record, Seq, TServerName};
use ivrstate_projection::{AgentSnapshot, EntityKey, PortState, ServerState, State};
use ivrstate_store::DerivedTree;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// Whether a derived key is a chunk's (its value is held by [`Packs`]).
pub(crate) fn is_chunk_key(key: &[u8]) -> bool {
    matches!(key.first(), Some(&AGENT_CHUNK_TAG | &BY_AGENT_TAG))
}

/// States per chunk: small enough that decoding one for an as-of lookup is a few microseconds.
pub(crate) const CHUNK_LEN: usize = 64;

pub(crate) const SERVER_PORT_TAG: u8 = b'T';
pub(crate) const AGENT_CHUNK_TAG: u8 = b'C';
pub(crate) const BY_AGENT_TAG: u8 = b'G';
pub(crate) const ENTITY_TAG: u8 = b'E';

/// The state of a server or port as stored in its history, with the ids that name it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum EntityState {
    Server {
        name: TServerName,
        state: ServerState,
    },
    Port {
        ivr: IvrName,
        port: PortNum,
        state: PortState,
    },
}

fn tagged(tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(rest.len() + 1);
    key.push(tag);
    key.extend_from_slice(rest);
    key
}

/// `C` + entity: the prefix of one DN's chunks.
pub(crate) fn agent_chunks_prefix(entity: &EntityKey) -> Vec<u8> {
    tagged(AGENT_CHUNK_TAG, &keys::entity_prefix(entity))
}

/// `G` + agent id: the prefix of one agent's chunks.
pub(crate) fn by_agent_prefix(agent: &ivrstate_model::AgentId) -> Vec<u8> {
    tagged(BY_AGENT_TAG, &keys::agent_prefix(agent))
}

/// `T` + entity: the prefix of one server's or port's entries.
pub(crate) fn server_port_prefix(entity: &EntityKey) -> Vec<u8> {
    tagged(SERVER_PORT_TAG, &keys::entity_prefix(entity))
}

/// The last key of `prefix` at or before (`at`, any seq).
fn upto(prefix: &[u8], at: Micros) -> Vec<u8> {
    keys::transition_key(prefix, at, Seq::MAX)
}

/// A chunk's bytes: lz4 of its bincode (the states of one DN repeat its T-Server, DN and agent
/// id, so they compress several-fold; decompressing 64 states takes a few microseconds).
/// bincode's derive rather than its serde path (the same bytes): an as-of query decodes a chunk
/// per agent, and this is most of its cost.
#[cfg(test)]
fn encode_chunk(states: &[AgentSnapshot]) -> Vec<u8> {
    let mut chunk = OpenChunk::default();
    for state in states {
        chunk.push(state);
    }
    chunk.to_bytes()
}

fn decode_chunk(bytes: &[u8]) -> Result<Vec<AgentSnapshot>> {
    let raw = lz4_flex::decompress_size_prepended(bytes)
        .map_err(|e| crate::EngineError::Derived(format!("history chunk: {e}")))?;
    let mut states: Vec<AgentSnapshot> =
        bincode::borrow_decode_from_slice(&raw, ivrstate_model::bincode_config())
            .map(|(states, _)| states)
            .map_err(|e| crate::EngineError::Derived(format!("undecodable history chunk: {e}")))?;
    // Times and seqs are stored as differences from the state before (see `OpenChunk::push`).
    let mut before = (0i64, 0u64);
    for state in &mut states {
        state.start = Micros(before.0.wrapping_add(state.start.0));
        state.start_seq = before.1.wrapping_add(state.start_seq);
        before = (state.start.0, state.start_seq);
    }
    Ok(states)
}

/// The chunk being filled for one DN or agent id, kept as the bincode of its states (about 30
/// bytes each rather than the ~130 of an `AgentSnapshot`): every DN and agent of a site has one
/// open between catch-ups.
#[derive(Default)]
struct OpenChunk {
    key: Vec<u8>,
    /// The states' bincode, concatenated (a `Vec`'s bincode is its length, then this).
    raw: Vec<u8>,
    len: usize,
    /// Changed since it was last written.
    dirty: bool,
    /// The start time and seq of the last state pushed.
    before: (i64, u64),
}

impl OpenChunk {
    /// Appends a state's bincode with its start time and seq as differences from the state
    /// before (the first one's from zero): a few bytes instead of the 9 + 4 of the absolute
    /// varints, which lz4 cannot shrink (issue 13: chunks were ~18 bytes per state). The fields
    /// in the struct's order, so the bytes are the struct's with those two values replaced.
    fn push(&mut self, state: &AgentSnapshot) {
        let fields = (
            &state.agent_id,
            &state.tserver,
            &state.dn,
            &state.status,
            &state.work_mode,
            &state.reason,
            Micros(state.start.0.wrapping_sub(self.before.0)),
            state.start_seq.wrapping_sub(self.before.1),
        );
        self.before = (state.start.0, state.start_seq);
        // Encoding plain data into a Vec cannot fail; a short chunk would be caught by verify.
        let _ =
            bincode::encode_into_std_write(fields, &mut self.raw, ivrstate_model::bincode_config());
        self.len += 1;
        self.dirty = true;
    }

    /// The bytes [`decode_chunk`] reads: lz4 of the bincode of the `Vec` of states.
    fn to_bytes(&self) -> Vec<u8> {
        // bincode's varint length: one byte below 251 (a chunk holds at most CHUNK_LEN states).
        let mut raw = Vec::with_capacity(self.raw.len() + 9);
        match u8::try_from(self.len) {
            Ok(n) if n < 251 => raw.push(n),
            _ => {
                raw.push(253);
                raw.extend_from_slice(&(self.len as u64).to_le_bytes());
            }
        }
        raw.extend_from_slice(&self.raw);
        lz4_flex::compress_prepend_size(&raw)
    }
}

/// Turns folded records into history entries. The engine keeps one across catch-ups, so each
/// DN's chunk is written when it is full (and, while it fills, once per commit rather than once
/// per batch of records); verify uses one for the whole log, starting from nothing.
#[derive(Default)]
pub(crate) struct Deriver {
    open: HashMap<Vec<u8>, OpenChunk>,
}

impl Deriver {
    /// The entries for the entities one record touched, given the state right after it.
    pub(crate) fn record(
        &mut self,
        state: &State,
        entities: &mut BTreeSet<Vec<u8>>,
        touched: &[EntityKey],
        record: &Record,
        tree: Option<(&DerivedTree, &Packs)>,
        out: &mut impl Extend<(Vec<u8>, Vec<u8>)>,
    ) -> Result<()> {
        for entity in touched {
            let entity_prefix = keys::entity_prefix(entity);
            if !entities.contains(&entity_prefix) {
                out.extend([(tagged(ENTITY_TAG, &entity_prefix), Vec::new())]);
                entities.insert(entity_prefix);
            }
            let value = match entity {
                EntityKey::Agent(ts, dn) => {
                    let Some(agent) = state.agent_snapshot(ts.as_str(), dn.as_str()) else {
                        continue;
                    };
                    if let Some(id) = &agent.agent_id {
                        let first = |s: &AgentSnapshot| {
                            let mut key = by_agent_prefix(id);
                            keys::push_seq(&mut key, s.start_seq);
                            key
                        };
                        self.push(by_agent_prefix(id), &agent, first, tree, out)?;
                    }
                    let prefix = agent_chunks_prefix(entity);
                    let first =
                        |s: &AgentSnapshot| keys::transition_key(&prefix, s.start, s.start_seq);
                    self.push(prefix.clone(), &agent, first, tree, out)?;
                    continue;
                }
                EntityKey::Server(name) => {
                    state.server(name.as_str()).map(|s| EntityState::Server {
                        name: name.clone(),
                        state: s.clone(),
                    })
                }
                EntityKey::Port(ivr, port) => {
                    state
                        .port(ivr.as_str(), port.as_str())
                        .map(|s| EntityState::Port {
                            ivr: ivr.clone(),
                            port: port.clone(),
                            state: s.clone(),
                        })
                }
            };
            if let Some(value) = value {
                let key = keys::transition_key(
                    &server_port_prefix(entity),
                    record.envelope.time,
                    record.seq,
                );
                out.extend([(key, encode(&value))]);
            }
        }
        Ok(())
    }

    fn push(
        &mut self,
        prefix: Vec<u8>,
        state: &AgentSnapshot,
        first_key: impl FnOnce(&AgentSnapshot) -> Vec<u8>,
        tree: Option<(&DerivedTree, &Packs)>,
        out: &mut impl Extend<(Vec<u8>, Vec<u8>)>,
    ) -> Result<()> {
        let chunk = match self.open.entry(prefix) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                // First touch since the engine opened: continue the chunk stored last, if it
                // has room.
                let stored = match tree {
                    Some((tree, packs)) => match tree.scan_prefix(v.key()).next_back() {
                        Some(entry) => {
                            let (key, value) = entry?;
                            Some((key, packs.resolve(&value)?.into_owned()))
                        }
                        None => None,
                    },
                    None => None,
                };
                let mut chunk = OpenChunk::default();
                if let Some((key, bytes)) = stored {
                    let states = decode_chunk(&bytes)?;
                    if states.len() < CHUNK_LEN {
                        for s in &states {
                            chunk.push(s);
                        }
                        chunk.key = key;
                        chunk.dirty = false;
                    }
                }
                v.insert(chunk)
            }
        };
        if chunk.len >= CHUNK_LEN {
            if chunk.dirty {
                out.extend([(std::mem::take(&mut chunk.key), chunk.to_bytes())]);
            }
            chunk.raw.clear();
            chunk.len = 0;
            chunk.dirty = false;
            chunk.before = (0, 0);
        }
        if chunk.len == 0 {
            chunk.key = first_key(state);
        }
        chunk.push(state);
        Ok(())
    }

    /// Writes every chunk changed since the last commit (the open ones too, so that what is
    /// stored is exactly what the records folded so far give) and keeps them open.
    pub(crate) fn commit(&mut self, out: &mut impl Extend<(Vec<u8>, Vec<u8>)>) {
        for chunk in self.open.values_mut() {
            if chunk.dirty {
                out.extend([(chunk.key.clone(), chunk.to_bytes())]);
                chunk.dirty = false;
            }
        }
    }

    /// Forgets every open chunk (after the derived data was dropped).
    pub(crate) fn clear(&mut self) {
        self.open.clear();
    }
}

/// The state of a server or port at `at`: its last entry at or before it.
pub(crate) fn server_port_at(
    tree: &DerivedTree,
    entity: &EntityKey,
    at: Micros,
) -> Result<Option<(Seq, EntityState)>> {
    let prefix = server_port_prefix(entity);
    match tree
        .range(prefix.clone()..=upto(&prefix, at))
        .next_back()
        .transpose()?
    {
        Some((key, bytes)) => Ok(Some((crate::key_seq(&key), decode(&bytes)?))),
        None => Ok(None),
    }
}

/// The agent state of a DN at `at`: the last state starting at or before it.
pub(crate) fn agent_at(
    tree: &DerivedTree,
    packs: &Packs,
    entity: &EntityKey,
    at: Micros,
) -> Result<Option<AgentSnapshot>> {
    let prefix = agent_chunks_prefix(entity);
    let Some((_, bytes)) = tree
        .range(prefix.clone()..=upto(&prefix, at))
        .next_back()
        .transpose()?
    else {
        return Ok(None);
    };
    let chunk = packs.resolve(&bytes)?;
    if let Some(state) = last_state_at(&chunk, at) {
        return Ok(state);
    }
    // Bytes the scan does not understand: the full decoder says what is wrong with them.
    let states = decode_chunk(&chunk)?;
    Ok(states.into_iter().rev().find(|s| s.start <= at))
}

/// The last state of a chunk that starts at or before `at`, decoding only that one: the others
/// are skipped over, reading just their time and seq (an as-of query looks into one chunk per
/// DN, and decoding every state of each, strings included, was most of its cost). `None` when
/// the bytes are not a chunk this scan understands.
fn last_state_at(chunk: &[u8], at: Micros) -> Option<Option<AgentSnapshot>> {
    let raw = lz4_flex::decompress_size_prepended(chunk).ok()?;
    let mut pos = 0;
    let count = varint(&raw, &mut pos)?;
    let mut before = (0i64, 0u64);
    let mut found: Option<(usize, i64, u64)> = None;
    for _ in 0..count {
        let state_at = pos;
        skip_option(&raw, &mut pos, skip_str)?; // agent id
        skip_str(&raw, &mut pos)?; // T-Server
        skip_str(&raw, &mut pos)?; // DN
        varint(&raw, &mut pos)?; // status
        skip_option(&raw, &mut pos, |raw, pos| {
            // work mode: its variant, and the code of `Other` (the 9th)
            if varint(raw, pos)? == 8 {
                varint(raw, pos)?;
            }
            Some(())
        })?;
        skip_option(&raw, &mut pos, skip_str)?; // reason
        let zigzag = varint(&raw, &mut pos)?;
        let delta = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
        let start = before.0.wrapping_add(delta);
        let seq = before.1.wrapping_add(varint(&raw, &mut pos)?);
        before = (start, seq);
        if start <= at.0 {
            found = Some((state_at, start, seq));
        }
    }
    let Some((state_at, start, seq)) = found else {
        return Some(None);
    };
    let (mut state, _): (AgentSnapshot, usize) =
        bincode::borrow_decode_from_slice(raw.get(state_at..)?, ivrstate_model::bincode_config())
            .ok()?;
    state.start = Micros(start);
    state.start_seq = seq;
    Some(Some(state))
}

/// bincode's variable-length integer (standard configuration): one byte below 251, else a
/// marker byte and 2, 4 or 8 little-endian bytes.
fn varint(raw: &[u8], pos: &mut usize) -> Option<u64> {
    let first = *raw.get(*pos)?;
    *pos += 1;
    let width = match first {
        0..=250 => return Some(u64::from(first)),
        251 => 2,
        252 => 4,
        253 => 8,
        _ => return None,
    };
    let bytes = raw.get(*pos..*pos + width)?;
    *pos += width;
    Some(
        bytes
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
    )
}

fn skip_str(raw: &[u8], pos: &mut usize) -> Option<()> {
    let len = usize::try_from(varint(raw, pos)?).ok()?;
    *pos = pos.checked_add(len).filter(|end| *end <= raw.len())?;
    Some(())
}

fn skip_option(
    raw: &[u8],
    pos: &mut usize,
    skip: impl FnOnce(&[u8], &mut usize) -> Option<()>,
) -> Option<()> {
    let tag = *raw.get(*pos)?;
    *pos += 1;
    match tag {
        0 => Some(()),
        1 => skip(raw, pos),
        _ => None,
    }
}

/// A DN's states that matter for `[from, to]`: from the chunk holding `from` up to the first
/// state after `to` (so the last interval knows it is closed).
pub(crate) fn agent_states(
    tree: &DerivedTree,
    packs: &Packs,
    entity: &EntityKey,
    from: Option<Micros>,
    to: Option<Micros>,
) -> Result<Vec<AgentSnapshot>> {
    let prefix = agent_chunks_prefix(entity);
    let start = match from {
        Some(from) => tree
            .range(prefix.clone()..=upto(&prefix, from))
            .next_back()
            .transpose()?
            .map_or_else(|| prefix.clone(), |(key, _)| key),
        None => prefix.clone(),
    };
    let mut out = Vec::new();
    for entry in tree.range(start..) {
        let (key, bytes) = entry?;
        if !key.starts_with(&prefix) {
            break;
        }
        let states = decode_chunk(&packs.resolve(&bytes)?)?;
        for state in states {
            let beyond = to.is_some_and(|to| state.start > to);
            out.push(state);
            if beyond {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Every state of one agent id (all its DNs), in log order.
pub(crate) fn by_agent(
    tree: &DerivedTree,
    packs: &Packs,
    agent: &ivrstate_model::AgentId,
) -> Result<Vec<AgentSnapshot>> {
    let mut out = Vec::new();
    for entry in tree.scan_prefix(&by_agent_prefix(agent)) {
        let (_, bytes) = entry?;
        out.extend(decode_chunk(&packs.resolve(&bytes)?)?);
    }
    Ok(out)
}

/// Every agent's states, grouped by agent id: calls `each` once per agent.
pub(crate) fn each_agent(
    tree: &DerivedTree,
    packs: &Packs,
    mut each: impl FnMut(Vec<AgentSnapshot>),
) -> Result<()> {
    let mut current: Option<Vec<u8>> = None;
    let mut states = Vec::new();
    for entry in tree.scan_prefix(&[BY_AGENT_TAG]) {
        let (key, bytes) = entry?;
        // `G` + length-prefixed id: the part of the key that names the agent.
        let len = key
            .get(1..3)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) as usize);
        let agent = key.get(..3 + len).unwrap_or(&key);
        if current.as_deref() != Some(agent) {
            if !states.is_empty() {
                each(std::mem::take(&mut states));
            }
            current = Some(agent.to_vec());
        }
        states.extend(decode_chunk(&packs.resolve(&bytes)?)?);
    }
    if !states.is_empty() {
        each(states);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivrstate_model::{AgentId, AgentStatus, Dn, TServerName, WorkMode};

    #[test]
    fn chunks_are_the_bytes_the_serde_path_wrote_and_read_back() {
        let snapshot = |i: i64, work_mode, reason: Option<&str>| AgentSnapshot {
            agent_id: (i % 2 == 0).then(|| AgentId::from("1001")),
            tserver: TServerName::from("TS_SIP"),
            dn: Dn::from("7001"),
            status: [
                AgentStatus::LoggedIn,
                AgentStatus::NotReady,
                AgentStatus::Ready,
            ][i.rem_euclid(3) as usize],
            work_mode,
            reason: reason.map(str::to_owned),
            start: Micros(1_439_769_600_000_000 + i * 1_000_000),
            start_seq: i.unsigned_abs() * 1000 + 251,
        };
        let states = vec![
            snapshot(0, None, None),
            snapshot(1, Some(WorkMode::AfterCallWork), Some("Break")),
            snapshot(
                2,
                Some(WorkMode::Other(-7)),
                Some("a reason longer than twenty-four bytes"),
            ),
            snapshot(-3, Some(WorkMode::ManualIn), None),
        ];
        let bytes = encode_chunk(&states);
        let raw = lz4_flex::decompress_size_prepended(&bytes).unwrap();
        // The serde path's bytes of the states with times and seqs as differences.
        let mut before = (0i64, 0u64);
        let deltas: Vec<AgentSnapshot> = states
            .iter()
            .map(|s| {
                let mut d = s.clone();
                d.start = Micros(s.start.0.wrapping_sub(before.0));
                d.start_seq = s.start_seq.wrapping_sub(before.1);
                before = (s.start.0, s.start_seq);
                d
            })
            .collect();
        assert_eq!(raw, encode(&deltas), "the serde path's bytes");
        assert_eq!(decode_chunk(&bytes).unwrap(), states);
        // The as-of scan finds what a full decode finds, at every moment around each state.
        for s in &states {
            for at in [s.start.0 - 1, s.start.0, s.start.0 + 1] {
                let at = Micros(at);
                let full = states.iter().rev().find(|x| x.start <= at).cloned();
                assert_eq!(last_state_at(&bytes, at), Some(full), "at {at:?}");
            }
        }
    }
}
