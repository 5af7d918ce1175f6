//! A hand-written encoder and decoder for the envelopes that make up nearly all of a log: T-Library agent
//! and link events. Reading the log (rebuild, catch-up, replay) spends most of its time
//! decoding, and bincode's generic decoder costs ~200 ns for a 50-byte agent event; this one
//! reads the same bytes straight from the slice in a fraction of that.
//!
//! It is a fast path, not a second format: it accepts only what it fully understands and
//! returns `None` for anything else (another event kind, a work mode with a code, an unexpected
//! byte, truncated input), and the caller then decodes with bincode, which gives the value or
//! the error. So on every input the result is bincode's (tests compare both over every event
//! shape and over random envelopes). The layout is bincode 2's standard configuration as the
//! model's derives write it: varint integers (`< 251` in one byte, else a marker byte 251/252/253
//! and 2/4/8 bytes little endian), zigzag for signed ones, a `u8` tag for `Option`, a varint
//! variant index for enums, length-prefixed strings and sequences.

use ivrstate_model::{
    AgentEvent, AgentEventKind, AgentId, Dn, Envelope, Event, KvList, Micros, Queue, TLibEvent,
    TLibKind, TServerName, WorkMode,
};

// Variant indexes (declaration order in the model).
const EVENT_TLIB: u8 = 0;
const TLIB_AGENT: u8 = 0;
const TLIB_LINK_CONNECTED: u8 = 2;
const TLIB_LINK_DISCONNECTED: u8 = 3;

/// Decodes one envelope from the front of `bytes`; returns it and the bytes after it.
#[inline(always)]
pub(super) fn envelope(bytes: &[u8]) -> Option<(Envelope, &[u8])> {
    let mut c = Cursor(bytes);
    let time = Micros(c.i64()?);
    let recorded = Micros(c.i64()?);
    if c.tag()? != EVENT_TLIB {
        return None;
    }
    let tserver = TServerName::from(c.str()?);
    let source_seq = if c.is_some()? { Some(c.u64()?) } else { None };
    let kind = match c.tag()? {
        TLIB_AGENT => TLibKind::Agent(AgentEvent {
            kind: unit::<AgentEventKind>(c.tag()?)?,
            dn: Dn::from(c.str()?),
            agent_id: c.opt_str()?.map(AgentId::from),
            queue: c.opt_str()?.map(Queue::from),
            work_mode: if c.is_some()? {
                Some(unit::<WorkMode>(c.tag()?)?)
            } else {
                None
            },
            reasons: c.kv_list()?,
            extensions: c.kv_list()?,
        }),
        TLIB_LINK_CONNECTED => TLibKind::LinkConnected,
        TLIB_LINK_DISCONNECTED => TLibKind::LinkDisconnected,
        _ => return None,
    };
    let event = Event::TLib(TLibEvent {
        tserver,
        source_seq,
        kind,
    });
    Some((
        Envelope {
            time,
            recorded,
            event,
        },
        c.0,
    ))
}

/// Appends `env` as bincode to `out` if it has the shape [`envelope`] reads; returns whether it
/// did (otherwise `out` is unchanged and the caller encodes with bincode).
pub(super) fn encode_envelope(env: &Envelope, out: &mut Vec<u8>) -> bool {
    let Event::TLib(t) = &env.event else {
        return false;
    };
    let agent = match &t.kind {
        TLibKind::Agent(a) => match a.work_mode {
            None => Some((a, None)),
            Some(mode) => match unit_index(mode) {
                Some(i) => Some((a, Some(i))),
                None => return false,
            },
        },
        TLibKind::LinkConnected | TLibKind::LinkDisconnected => None,
        TLibKind::AddressInfo(_) | TLibKind::SocketClosed => return false,
    };
    put_i64(out, env.time.0);
    put_i64(out, env.recorded.0);
    out.push(EVENT_TLIB);
    put_str(out, t.tserver.as_str());
    match t.source_seq {
        Some(s) => {
            out.push(1);
            put_u64(out, s);
        }
        None => out.push(0),
    }
    match (&t.kind, agent) {
        (TLibKind::Agent(_), Some((a, work_mode))) => {
            out.push(TLIB_AGENT);
            out.push(a.kind as u8);
            put_str(out, a.dn.as_str());
            put_opt_str(out, a.agent_id.as_ref().map(|x| x.as_str()));
            put_opt_str(out, a.queue.as_ref().map(|x| x.as_str()));
            match work_mode {
                Some(i) => out.extend_from_slice(&[1, i]),
                None => out.push(0),
            }
            put_kv_list(out, &a.reasons);
            put_kv_list(out, &a.extensions);
        }
        (TLibKind::LinkConnected, _) => out.push(TLIB_LINK_CONNECTED),
        _ => out.push(TLIB_LINK_DISCONNECTED),
    }
    true
}

/// The variant index of a unit variant, through the model's own derive; `None` for one that
/// carries data.
fn unit_index<T: bincode::Encode>(value: T) -> Option<u8> {
    let mut buf = [0u8; 1];
    match bincode::encode_into_slice(value, &mut buf, super::config()) {
        Ok(1) => Some(buf[0]).filter(|&b| b <= 250),
        _ => None,
    }
}

pub(super) fn put_u64(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => out.push(n as u8),
        251..=0xffff => {
            out.push(251);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(252);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        _ => {
            out.push(253);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

fn put_i64(out: &mut Vec<u8>, n: i64) {
    // Zigzag: 0, -1, 1, -2, ... as 0, 1, 2, 3, ...
    put_u64(out, ((n << 1) ^ (n >> 63)) as u64);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

fn put_kv_list(out: &mut Vec<u8>, kv: &KvList) {
    put_u64(out, kv.0.len() as u64);
    for (k, v) in &kv.0 {
        put_str(out, k);
        put_str(out, v);
    }
}

/// A unit variant from its index, through the model's own derive (so the order is not written
/// down twice); `None` for a variant that carries data.
fn unit<T: bincode::Decode<()>>(index: u8) -> Option<T> {
    bincode::decode_from_slice::<T, _>(&[index], super::decode_config())
        .ok()
        .map(|(v, _)| v)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u64(&mut self) -> Option<u64> {
        Some(match self.byte()? {
            b @ 0..=250 => u64::from(b),
            251 => u64::from(u16::from_le_bytes(self.array()?)),
            252 => u64::from(u32::from_le_bytes(self.array()?)),
            253 => u64::from_le_bytes(self.array()?),
            _ => return None,
        })
    }

    fn i64(&mut self) -> Option<i64> {
        let n = self.u64()?;
        // Zigzag: even n is n/2, odd n is -(n+1)/2.
        Some(if n % 2 == 0 {
            (n / 2) as i64
        } else {
            !(n / 2) as i64
        })
    }

    /// An enum variant index; only the one-byte form (no model enum has 251 variants).
    fn tag(&mut self) -> Option<u8> {
        self.byte().filter(|&b| b <= 250)
    }

    fn is_some(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.u64()?).ok()?;
        let bytes = self.take(len)?;
        if bytes.is_ascii() {
            // SAFETY: ASCII is valid UTF-8. (Ids and reason codes are ASCII; checking that is a
            // short loop where `from_utf8` costs a call and a setup per string.)
            return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        std::str::from_utf8(bytes).ok()
    }

    fn opt_str(&mut self) -> Option<Option<&'a str>> {
        Some(if self.is_some()? {
            Some(self.str()?)
        } else {
            None
        })
    }

    fn kv_list(&mut self) -> Option<KvList> {
        let n = usize::try_from(self.u64()?).ok()?;
        // Each pair takes at least two bytes: a larger count is damage, not an allocation.
        if n > self.0.len() / 2 {
            return None;
        }
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            pairs.push((self.str()?.into(), self.str()?.into()));
        }
        Some(KvList(pairs))
    }
}
