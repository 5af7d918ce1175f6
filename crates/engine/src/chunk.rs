//! The bytes of a history chunk: the states of one DN, oldest first, each written as what
//! changed since the state before it.
//!
//! Why not bincode + lz4 (the layout before store format 5): a DN's states repeat its T-Server,
//! DN and agent id, and their times and seqs are large numbers; lz4 removed the repetition but
//! not the numbers, and a state still cost ~15 bytes, written twice (per DN and per agent id).
//! Here a state is a head byte, its time and seq as varint differences, and only the fields that
//! changed; a string (agent id, reason) is written once per chunk and named by its index after
//! that. A state costs ~5-7 bytes and is stored once (issue 13).
//!
//! ```text
//! state  = head [agent] [place] [mode] [reason] time seq
//! head   = status (bits 0-2) | agent changed (bit 3) | place changed (4) | mode changed (5)
//!          | reason changed (6) | time in us (7)
//! agent, reason = varint: 0 = none, k <= strings so far = the k-th, next = a new string
//!          (varint length + UTF-8) that becomes the next one
//! place  = T-Server, DN (varint length + UTF-8 each)
//! mode   = varint: 0 = none, 1..=8 = the documented mode's code + 1 (Unknown..ReturnBack),
//!          9 = Other + zigzag code
//! time   = zigzag difference from the state before (from 0 for the first), in ms when it is
//!          a whole number of ms (log times are), else in us and bit 7 of the head set
//! seq    = difference from the state before (from 0 for the first)
//! ```
//!
//! Encoding is deterministic (the bytes depend only on the states), so a chunk continued after
//! a restart, or derived again by `rebuild`, has the same bytes, which `verify` compares.

use ivrstate_model::{AgentId, AgentStatus, Dn, Micros, Seq, TServerName, WorkMode};
use ivrstate_projection::AgentSnapshot;

const AGENT: u8 = 1 << 3;
const PLACE: u8 = 1 << 4;
const MODE: u8 = 1 << 5;
const REASON: u8 = 1 << 6;
const MICROS: u8 = 1 << 7;

/// A chunk being written: its bytes so far and what the next state is compared with.
#[derive(Default)]
pub(crate) struct ChunkWriter {
    bytes: Vec<u8>,
    len: usize,
    strings: Vec<String>,
    last: Option<AgentSnapshot>,
}

impl ChunkWriter {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.len = 0;
        self.strings.clear();
        self.last = None;
    }

    pub(crate) fn push(&mut self, state: &AgentSnapshot) {
        let last = self.last.as_ref();
        // The status's index in `AgentStatus::ALL` (its declaration order, as in bincode); the
        // test `a_chunk_has_the_documented_bytes` holds the stored numbers to it.
        let status = AgentStatus::ALL
            .iter()
            .position(|s| *s == state.status)
            .unwrap_or(4) as u8;
        let mut head = status;
        let agent = state.agent_id.as_ref().map(AgentId::as_str);
        let agent_changed = last.is_none_or(|l| l.agent_id.as_ref().map(AgentId::as_str) != agent);
        let place_changed = last.is_none_or(|l| l.tserver != state.tserver || l.dn != state.dn);
        let mode_changed = last.map_or(state.work_mode.is_some(), |l| {
            l.work_mode != state.work_mode
        });
        let reason_changed = last.map_or(state.reason.is_some(), |l| l.reason != state.reason);
        for (changed, bit) in [
            (agent_changed, AGENT),
            (place_changed, PLACE),
            (mode_changed, MODE),
            (reason_changed, REASON),
        ] {
            if changed {
                head |= bit;
            }
        }
        let (before_time, before_seq) = last.map_or((0, 0), |l| (l.start.0, l.start_seq));
        let delta = state.start.0.wrapping_sub(before_time);
        let time = if delta % 1000 == 0 {
            zigzag(delta / 1000)
        } else {
            head |= MICROS;
            zigzag(delta)
        };
        self.bytes.push(head);
        if agent_changed {
            self.string(agent);
        }
        if place_changed {
            put_str(&mut self.bytes, state.tserver.as_str());
            put_str(&mut self.bytes, state.dn.as_str());
        }
        if mode_changed {
            match state.work_mode {
                None => put_varint(&mut self.bytes, 0),
                Some(WorkMode::Other(code)) => {
                    put_varint(&mut self.bytes, 9);
                    put_varint(&mut self.bytes, zigzag(i64::from(code)));
                }
                // A documented mode: its code (0..=7) + 1.
                Some(mode) => {
                    put_varint(&mut self.bytes, u64::from(mode.code().unsigned_abs()) + 1)
                }
            }
        }
        if reason_changed {
            self.string(state.reason.as_deref());
        }
        put_varint(&mut self.bytes, time);
        put_varint(&mut self.bytes, state.start_seq.wrapping_sub(before_seq));
        self.len += 1;
        self.last = Some(state.clone());
    }

    fn string(&mut self, s: Option<&str>) {
        let Some(s) = s else {
            put_varint(&mut self.bytes, 0);
            return;
        };
        match self.strings.iter().position(|known| known == s) {
            Some(i) => put_varint(&mut self.bytes, i as u64 + 1),
            None => {
                put_varint(&mut self.bytes, self.strings.len() as u64 + 1);
                put_str(&mut self.bytes, s);
                self.strings.push(s.to_owned());
            }
        }
    }
}

/// One state as read from a chunk, its strings borrowed from the chunk's bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StateRef<'c> {
    pub(crate) agent: Option<&'c str>,
    pub(crate) tserver: &'c str,
    pub(crate) dn: &'c str,
    pub(crate) status: AgentStatus,
    pub(crate) work_mode: Option<WorkMode>,
    pub(crate) reason: Option<&'c str>,
    pub(crate) start: Micros,
    pub(crate) start_seq: Seq,
}

impl StateRef<'_> {
    pub(crate) fn to_snapshot(self) -> AgentSnapshot {
        AgentSnapshot {
            agent_id: self.agent.map(AgentId::from),
            tserver: TServerName::from(self.tserver),
            dn: Dn::from(self.dn),
            status: self.status,
            work_mode: self.work_mode,
            reason: self.reason.map(str::to_owned),
            start: self.start,
            start_seq: self.start_seq,
        }
    }
}

/// Reads a chunk's states in order; `None` at the end, `Some(Err)` once if the bytes are not a
/// chunk (then nothing more).
pub(crate) struct ChunkReader<'c> {
    bytes: &'c [u8],
    pos: usize,
    strings: Vec<&'c str>,
    last: Option<StateRef<'c>>,
    failed: bool,
}

/// What is wrong with bytes that are not a chunk: the byte offset where reading stopped.
#[derive(Debug)]
pub(crate) struct BadChunk(pub(crate) usize);

impl<'c> ChunkReader<'c> {
    pub(crate) fn new(bytes: &'c [u8]) -> Self {
        ChunkReader {
            bytes,
            pos: 0,
            strings: Vec::new(),
            last: None,
            failed: false,
        }
    }

    fn next_state(&mut self) -> Option<StateRef<'c>> {
        let head = self.byte()?;
        let status = *AgentStatus::ALL.get(usize::from(head & 7))?;
        let last = self.last;
        let agent = if head & AGENT != 0 {
            self.string()?
        } else {
            last?.agent
        };
        let (tserver, dn) = if head & PLACE != 0 {
            (self.str()?, self.str()?)
        } else {
            (last?.tserver, last?.dn)
        };
        let work_mode = if head & MODE != 0 {
            match self.varint()? {
                0 => None,
                9 => Some(WorkMode::Other(
                    i32::try_from(unzigzag(self.varint()?)).ok()?,
                )),
                i @ 1..=8 => Some(WorkMode::from_code(i32::try_from(i - 1).ok()?)),
                _ => return None,
            }
        } else {
            last.and_then(|l| l.work_mode)
        };
        let reason = if head & REASON != 0 {
            self.string()?
        } else {
            last.and_then(|l| l.reason)
        };
        let (before_time, before_seq) = last.map_or((0, 0), |l| (l.start.0, l.start_seq));
        let time = self.varint()?;
        let delta = if head & MICROS == 0 {
            unzigzag(time).checked_mul(1000)?
        } else {
            unzigzag(time)
        };
        let seq = self.varint()?;
        let state = StateRef {
            agent,
            tserver,
            dn,
            status,
            work_mode,
            reason,
            start: Micros(before_time.wrapping_add(delta)),
            start_seq: before_seq.wrapping_add(seq),
        };
        self.last = Some(state);
        Some(state)
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn str(&mut self) -> Option<&'c str> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.pos.checked_add(len)?;
        let s = std::str::from_utf8(self.bytes.get(self.pos..end)?).ok()?;
        self.pos = end;
        Some(s)
    }

    fn string(&mut self) -> Option<Option<&'c str>> {
        let k = usize::try_from(self.varint()?).ok()?;
        if k == 0 {
            return Some(None);
        }
        if k == self.strings.len() + 1 {
            let s = self.str()?;
            self.strings.push(s);
        }
        Some(Some(*self.strings.get(k - 1)?))
    }
}

impl<'c> Iterator for ChunkReader<'c> {
    type Item = Result<StateRef<'c>, BadChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.bytes.len() {
            return None;
        }
        let at = self.pos;
        match self.next_state() {
            Some(state) => Some(Ok(state)),
            None => {
                self.failed = true;
                Some(Err(BadChunk(at)))
            }
        }
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn snapshot(
        agent: Option<&str>,
        dn: &str,
        status: AgentStatus,
        work_mode: Option<WorkMode>,
        reason: Option<&str>,
        start: i64,
        seq: Seq,
    ) -> AgentSnapshot {
        AgentSnapshot {
            agent_id: agent.map(AgentId::from),
            tserver: TServerName::from("TS_SIP"),
            dn: Dn::from(dn),
            status,
            work_mode,
            reason: reason.map(str::to_owned),
            start: Micros(start),
            start_seq: seq,
        }
    }

    fn encode(states: &[AgentSnapshot]) -> Vec<u8> {
        let mut w = ChunkWriter::default();
        for s in states {
            w.push(s);
        }
        w.bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Vec<AgentSnapshot>, BadChunk> {
        ChunkReader::new(bytes)
            .map(|s| s.map(StateRef::to_snapshot))
            .collect()
    }

    /// The bytes of a small chunk, written out by hand: the layout is a stored format.
    #[test]
    fn a_chunk_has_the_documented_bytes() {
        let t0 = 1_439_769_600_000_000;
        let states = [
            snapshot(
                Some("1001"),
                "7001",
                AgentStatus::LoggedIn,
                None,
                None,
                t0,
                300,
            ),
            snapshot(
                Some("1001"),
                "7001",
                AgentStatus::NotReady,
                Some(WorkMode::AuxWork),
                Some("Break"),
                t0 + 2_000,
                302,
            ),
            snapshot(
                Some("1001"),
                "7001",
                AgentStatus::Ready,
                None,
                None,
                t0 + 2_500,
                310,
            ),
        ];
        let bytes = encode(&states);
        let mut expected = vec![AGENT | PLACE, 1, 4];
        expected.extend_from_slice(b"1001");
        expected.push(6);
        expected.extend_from_slice(b"TS_SIP");
        expected.push(4);
        expected.extend_from_slice(b"7001");
        let mut t = Vec::new();
        put_varint(&mut t, zigzag(t0 / 1000));
        expected.extend_from_slice(&t);
        expected.extend_from_slice(&[0xac, 0x02]); // 300
        expected.extend_from_slice(&[3 | MODE | REASON, 5, 2, 5]);
        expected.extend_from_slice(b"Break");
        expected.extend_from_slice(&[4, 2]); // +2 ms, +2 seqs
        expected.extend_from_slice(&[2 | MODE | REASON | MICROS, 0, 0]);
        expected.extend_from_slice(&[0xe8, 0x07, 8]); // +500 us, +8 seqs
        assert_eq!(bytes, expected);
        assert_eq!(decode(&bytes).unwrap(), states);
    }

    #[test]
    fn damaged_chunks_are_errors_not_panics() {
        let bytes = encode(&[snapshot(
            Some("1001"),
            "7001",
            AgentStatus::Ready,
            Some(WorkMode::Other(-7)),
            Some("x"),
            5,
            1,
        )]);
        for cut in 0..bytes.len() {
            let _ = decode(&bytes[..cut]);
        }
        assert!(decode(&[7]).is_err(), "status 7 does not exist");
        assert!(decode(&[2]).is_err(), "no place on the first state");
    }

    fn arb_state() -> impl Strategy<Value = AgentSnapshot> {
        (
            proptest::option::of(prop::sample::select(vec!["1001", "1002", "ä"])),
            prop::sample::select(vec!["7001", "7002"]),
            0usize..5,
            proptest::option::of(prop_oneof![
                (0i32..8).prop_map(WorkMode::from_code),
                any::<i32>().prop_map(WorkMode::Other)
            ]),
            proptest::option::of(prop::sample::select(vec!["Break", "Lunch", ""])),
            any::<i64>(),
            any::<u64>(),
        )
            .prop_map(|(agent, dn, status, mode, reason, start, seq)| {
                snapshot(
                    agent,
                    dn,
                    AgentStatus::ALL[status],
                    mode,
                    reason,
                    start,
                    seq,
                )
            })
    }

    proptest! {
        #[test]
        fn any_states_read_back(states in prop::collection::vec(arb_state(), 0..80)) {
            let bytes = encode(&states);
            prop_assert_eq!(decode(&bytes).unwrap(), states);
        }

        #[test]
        fn any_bytes_read_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
