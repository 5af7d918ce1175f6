//! Byte keys of the derived trees. Every key sorts the way its queries scan it.
//!
//! Strings are length-prefixed (u16 BE) rather than separator-terminated so that keys are
//! prefix-free whatever bytes a T-Server name or DN holds; times are i64 with the sign bit
//! flipped, big-endian, so they sort numerically as bytes.

use ivrstate_model::{Dn, IvrName, Micros, PortNum, Seq, TServerName};
use ivrstate_projection::EntityKey;

pub fn push_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    // Names longer than 64 KiB cannot come from a T-Server log line or a config file we accept;
    // truncating keeps the key well-formed instead of panicking on hostile input.
    let len = bytes.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&bytes[..len]);
}

pub fn push_time(out: &mut Vec<u8>, t: Micros) {
    out.extend_from_slice(&((t.0 as u64) ^ (1 << 63)).to_be_bytes());
}

pub fn push_seq(out: &mut Vec<u8>, seq: Seq) {
    out.extend_from_slice(&seq.to_be_bytes());
}

pub fn seq_key(seq: Seq) -> [u8; 8] {
    seq.to_be_bytes()
}

pub fn read_seq(bytes: &[u8]) -> Option<Seq> {
    Some(Seq::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// The prefix shared by every transition of one entity.
pub fn entity_prefix(entity: &EntityKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    match entity {
        EntityKey::Server(name) => {
            out.push(b'S');
            push_str(&mut out, name.as_str());
        }
        EntityKey::Port(ivr, port) => {
            out.push(b'P');
            push_str(&mut out, ivr.as_str());
            push_str(&mut out, port.as_str());
        }
        EntityKey::Agent(tserver, dn) => {
            out.push(b'A');
            push_str(&mut out, tserver.as_str());
            push_str(&mut out, dn.as_str());
        }
    }
    out
}

/// Decodes [`entity_prefix`]'s output (the keys of the entities tree).
pub fn decode_entity(bytes: &[u8]) -> Option<EntityKey> {
    let (&tag, mut rest) = bytes.split_first()?;
    let mut next = || -> Option<String> {
        let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        let s = std::str::from_utf8(rest.get(2..2 + len)?).ok()?.to_owned();
        rest = &rest[2 + len..];
        Some(s)
    };
    Some(match tag {
        b'S' => EntityKey::Server(TServerName::from(next()?)),
        b'P' => EntityKey::Port(IvrName::from(next()?), PortNum::from(next()?)),
        b'A' => EntityKey::Agent(TServerName::from(next()?), Dn::from(next()?)),
        _ => return None,
    })
}

/// Key of one transition: entity prefix, event time, seq. Within an entity, time order is
/// source order (docs/design.md: each entity is changed only by its own source, in order), and the
/// seq breaks ties between events stamped with the same microsecond.
pub fn transition_key(prefix: &[u8], time: Micros, seq: Seq) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 16);
    out.extend_from_slice(prefix);
    push_time(&mut out, time);
    push_seq(&mut out, seq);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_keys_sort_numerically() {
        let mut keys: Vec<Vec<u8>> = [-5i64, -1, 0, 1, 1_439_853_377_000_000, i64::MIN, i64::MAX]
            .iter()
            .map(|&t| transition_key(b"A", Micros(t), 1))
            .collect();
        let sorted_by_bytes = {
            let mut k = keys.clone();
            k.sort();
            k
        };
        keys.sort_by_key(|k| i64::from_be_bytes(k[1..9].try_into().unwrap()) ^ i64::MIN);
        assert_eq!(keys, sorted_by_bytes);
    }

    #[test]
    fn entity_keys_round_trip_and_are_prefix_free() {
        let a = EntityKey::Agent(TServerName::from("TS"), Dn::from("70"));
        let b = EntityKey::Agent(TServerName::from("TS"), Dn::from("701"));
        for e in [
            a.clone(),
            b.clone(),
            EntityKey::Server("TS".into()),
            EntityKey::Port("IVR".into(), "01".into()),
        ] {
            assert_eq!(decode_entity(&entity_prefix(&e)), Some(e));
        }
        assert!(!entity_prefix(&b).starts_with(&entity_prefix(&a)));
    }
}
