//! The persisted history: what each entity's state was, from when. Everything here lives in the
//! `derived` tree and is recomputable from the log.
//!
//! Agents change with almost every event, so their history is stored in **chunks** of up to
//! [`CHUNK_LEN`] states (one entry per chunk, not per event; the bytes are [`crate::chunk`]'s):
//!
//! - `C` + agent entity + start time + start seq of the chunk's first state -> the states of one
//!   (T-Server, DN), oldest first. The fold keeps each DN's `since` monotonic (an out-of-order
//!   event is folded as if it happened at the last change), so within a DN the chunks partition
//!   time and as-of is one reverse range lookup plus a search inside one chunk;
//! - `A` + agent id + agent entity -> nothing: the DNs an agent id has used. `history --agent`
//!   reads those DNs' chunks and keeps the agent's states; each state is stored once (a copy per
//!   agent id doubled the history's bytes, issue 13).
//!
//! Servers and ports change rarely and may be changed by two sources (configuration and the
//! T-Server's link), so they keep one entry per change, ordered by the record's time:
//! `T` + entity + time + seq -> [`EntityState`].
//!
//! A chunk is appended to until full; the chunk's final bytes depend only on the sequence of
//! states, never on how catch-up was batched, so a rebuild reproduces them exactly.

use crate::chunk::{BadChunk, ChunkReader, ChunkWriter, StateRef};
use crate::keys;
use crate::packs::Packs;
use crate::{decode, encode, Result};
use ivrstate_model::{IvrName, Micros, PortNum, Record, Seq, TServerName};
use ivrstate_projection::{AgentSnapshot, EntityKey, PortState, ServerState, State};
use ivrstate_store::DerivedTree;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Whether a derived key is a chunk's (its value is held by [`Packs`]).
pub(crate) fn is_chunk_key(key: &[u8]) -> bool {
    key.first() == Some(&AGENT_CHUNK_TAG)
}

/// States per chunk: small enough that decoding one for an as-of lookup is a few microseconds.
pub(crate) const CHUNK_LEN: usize = 256;

pub(crate) const SERVER_PORT_TAG: u8 = b'T';
pub(crate) const AGENT_CHUNK_TAG: u8 = b'C';
pub(crate) const AGENT_DNS_TAG: u8 = b'A';
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

/// Appends `A` + agent id: the prefix of the DNs one agent id has used.
pub(crate) fn push_agent_dns_prefix(out: &mut Vec<u8>, agent: &ivrstate_model::AgentId) {
    out.push(AGENT_DNS_TAG);
    keys::push_str(out, agent.as_str());
}

/// `T` + entity: the prefix of one server's or port's entries.
pub(crate) fn server_port_prefix(entity: &EntityKey) -> Vec<u8> {
    tagged(SERVER_PORT_TAG, &keys::entity_prefix(entity))
}

/// The last key of `prefix` at or before (`at`, any seq).
fn upto(prefix: &[u8], at: Micros) -> Vec<u8> {
    keys::transition_key(prefix, at, Seq::MAX)
}

fn bad_chunk(e: BadChunk) -> crate::EngineError {
    crate::EngineError::Derived(format!("undecodable history chunk (at byte {})", e.0))
}

/// Every state of a chunk.
fn decode_chunk(bytes: &[u8]) -> Result<Vec<AgentSnapshot>> {
    ChunkReader::new(bytes)
        .map(|s| s.map(StateRef::to_snapshot).map_err(bad_chunk))
        .collect()
}

/// The chunk being filled for one DN: every DN of a site has one open between catch-ups.
#[derive(Default)]
struct OpenChunk {
    key: Vec<u8>,
    writer: ChunkWriter,
    /// Changed since it was last written.
    dirty: bool,
}

/// Turns folded records into history entries. The engine keeps one across catch-ups, so each
/// DN's chunk is written when it is full (and, while it fills, once per commit rather than once
/// per batch of records); verify uses one for the whole log, starting from nothing.
#[derive(Default)]
pub(crate) struct Deriver {
    open: HashMap<Vec<u8>, OpenChunk>,
    /// The `A` entries written since the engine opened (writing one again is harmless, so the
    /// stored ones are not loaded).
    agent_dns: HashSet<Vec<u8>>,
    agent_dns_key: Vec<u8>,
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
                entities.insert(entity_prefix.clone());
            }
            let value = match entity {
                EntityKey::Agent(ts, dn) => {
                    let Some(agent) = state.agent_snapshot(ts.as_str(), dn.as_str()) else {
                        continue;
                    };
                    if let Some(id) = &agent.agent_id {
                        // Built in a buffer kept between records: this runs for every event.
                        let key = &mut self.agent_dns_key;
                        key.clear();
                        push_agent_dns_prefix(key, id);
                        key.extend_from_slice(&entity_prefix);
                        if !self.agent_dns.contains(key.as_slice()) {
                            out.extend([(key.clone(), Vec::new())]);
                            self.agent_dns.insert(key.clone());
                        }
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
                            chunk.writer.push(s);
                        }
                        chunk.key = key;
                    }
                }
                v.insert(chunk)
            }
        };
        if chunk.writer.len() >= CHUNK_LEN {
            if chunk.dirty {
                out.extend([(
                    std::mem::take(&mut chunk.key),
                    chunk.writer.bytes().to_vec(),
                )]);
            }
            chunk.writer.clear();
            chunk.dirty = false;
        }
        if chunk.writer.len() == 0 {
            chunk.key = first_key(state);
        }
        chunk.writer.push(state);
        chunk.dirty = true;
        Ok(())
    }

    /// Writes every chunk changed since the last commit (the open ones too, so that what is
    /// stored is exactly what the records folded so far give) and keeps them open.
    pub(crate) fn commit(&mut self, out: &mut impl Extend<(Vec<u8>, Vec<u8>)>) {
        for chunk in self.open.values_mut() {
            if chunk.dirty {
                out.extend([(chunk.key.clone(), chunk.writer.bytes().to_vec())]);
                chunk.dirty = false;
            }
        }
    }

    /// Forgets every open chunk (after the derived data was dropped).
    pub(crate) fn clear(&mut self) {
        self.open.clear();
        self.agent_dns.clear();
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
    let mut found = None;
    for state in ChunkReader::new(&chunk) {
        let state = state.map_err(bad_chunk)?;
        if state.start > at {
            break;
        }
        found = Some(state);
    }
    Ok(found.map(StateRef::to_snapshot))
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
    let mut prefix = Vec::new();
    push_agent_dns_prefix(&mut prefix, agent);
    let mut out = Vec::new();
    for entry in tree.scan_prefix(&prefix) {
        let (key, _) = entry?;
        let dn_chunks = tagged(AGENT_CHUNK_TAG, key.get(prefix.len()..).unwrap_or_default());
        for entry in tree.scan_prefix(&dn_chunks) {
            let (_, bytes) = entry?;
            for state in ChunkReader::new(&packs.resolve(&bytes)?) {
                let state = state.map_err(bad_chunk)?;
                if state.agent == Some(agent.as_str()) {
                    out.push(state.to_snapshot());
                }
            }
        }
    }
    out.sort_by_key(|s| s.start_seq);
    Ok(out)
}

/// Every agent's states, one DN at a time: calls `each` once per (agent id, DN) with that
/// agent's states on that DN in log order (states without an agent id are skipped).
pub(crate) fn each_agent_on_each_dn(
    tree: &DerivedTree,
    packs: &Packs,
    mut each: impl FnMut(Vec<AgentSnapshot>),
) -> Result<()> {
    let mut current: Option<Vec<u8>> = None;
    // One DN's states per agent id; a DN has few agents, so a list beats a map.
    let mut per_agent: Vec<(String, Vec<AgentSnapshot>)> = Vec::new();
    let mut flush = |per_agent: &mut Vec<(String, Vec<AgentSnapshot>)>| {
        for (_, states) in per_agent.drain(..) {
            each(states);
        }
    };
    for entry in tree.scan_prefix(&[AGENT_CHUNK_TAG]) {
        let (key, bytes) = entry?;
        // The key without its start time and seq names the DN.
        let dn = key.get(..key.len().saturating_sub(16)).unwrap_or(&key);
        if current.as_deref() != Some(dn) {
            flush(&mut per_agent);
            current = Some(dn.to_vec());
        }
        for state in ChunkReader::new(&packs.resolve(&bytes)?) {
            let state = state.map_err(bad_chunk)?;
            let Some(agent) = state.agent else { continue };
            match per_agent.iter_mut().find(|(a, _)| a == agent) {
                Some((_, states)) => states.push(state.to_snapshot()),
                None => per_agent.push((agent.to_owned(), vec![state.to_snapshot()])),
            }
        }
    }
    flush(&mut per_agent);
    Ok(())
}
