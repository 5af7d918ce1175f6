//! Time as microseconds since the Unix epoch, UTC.
//!
//! T-Library stamps events with `AttributeTimeinSecs` + `AttributeTimeinuSecs`; keeping the same
//! resolution means no event time is ever rounded. Formatting and parsing (RFC 3339 with
//! microseconds, or epoch seconds) are done here by hand so the model needs no date library.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(pub i64);

const US_PER_SEC: i64 = 1_000_000;
const SECS_PER_DAY: i64 = 86_400;

impl Micros {
    pub const MIN: Micros = Micros(i64::MIN);
    pub const MAX: Micros = Micros(i64::MAX);

    pub fn from_secs(secs: i64) -> Self {
        Micros(secs.saturating_mul(US_PER_SEC))
    }

    /// From T-Library's `TimeinSecs` and `TimeinuSecs` pair.
    pub fn from_secs_micros(secs: i64, micros: i64) -> Self {
        Micros(secs.saturating_mul(US_PER_SEC).saturating_add(micros))
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / US_PER_SEC as f64
    }

    /// Whole seconds (floor) and the microseconds within that second.
    pub fn split(self) -> (i64, i64) {
        (self.0.div_euclid(US_PER_SEC), self.0.rem_euclid(US_PER_SEC))
    }

    /// The civil date and time in UTC: (year, month, day, hour, minute, second, microsecond).
    pub fn to_civil(self) -> Civil {
        let (secs, micros) = self.split();
        let days = secs.div_euclid(SECS_PER_DAY);
        let sod = secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: (sod / 3600) as u32,
            minute: (sod % 3600 / 60) as u32,
            second: (sod % 60) as u32,
            micros: micros as u32,
        }
    }

    pub fn from_civil(c: &Civil) -> Self {
        let days = days_from_civil(c.year, c.month, c.day);
        let secs = days * SECS_PER_DAY
            + i64::from(c.hour) * 3600
            + i64::from(c.minute) * 60
            + i64::from(c.second);
        Micros::from_secs_micros(secs, i64::from(c.micros))
    }

    /// Midnight UTC of the day this instant falls in.
    pub fn start_of_day(self) -> Micros {
        let (secs, _) = self.split();
        Micros::from_secs(secs.div_euclid(SECS_PER_DAY) * SECS_PER_DAY)
    }

    /// RFC 3339 in UTC with microseconds: `2015-08-17T23:16:17.458658Z`.
    pub fn to_rfc3339(self) -> String {
        self.to_string()
    }

    /// Parses RFC 3339 (`2015-08-17T23:16:17.458658Z`, offsets such as `+02:00`, a space
    /// instead of `T`, fractions of any length, a missing zone meaning UTC), a bare date
    /// (`2015-08-17`, midnight UTC) or epoch seconds (`1439853377`, `1439853377.458658`).
    pub fn parse(s: &str) -> Result<Micros, TimeParseError> {
        let s = s.trim();
        let err = || TimeParseError(s.to_owned());
        if s.is_empty() {
            return Err(err());
        }
        if s.bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
            && !s.get(1..).unwrap_or_default().contains('-')
        {
            return parse_epoch(s).ok_or_else(err);
        }
        parse_rfc3339(s).ok_or_else(err)
    }
}

/// A UTC civil date and time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
}

/// A time string that is neither RFC 3339 nor epoch seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeParseError(pub String);

impl fmt::Display for TimeParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid time {:?}: expected RFC 3339 (2015-08-17T23:16:17.458658Z) or epoch seconds",
            self.0
        )
    }
}

impl std::error::Error for TimeParseError {}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.to_civil();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            c.year, c.month, c.day, c.hour, c.minute, c.second, c.micros
        )
    }
}

impl fmt::Debug for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The log's encoding (bincode): the i64, as serde's compact form below.
impl bincode::Encode for Micros {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        bincode::Encode::encode(&self.0, encoder)
    }
}

impl<C> bincode::Decode<C> for Micros {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        <i64 as bincode::Decode<C>>::decode(decoder).map(Micros)
    }
}
bincode::impl_borrow_decode!(Micros);

/// Human-readable formats (JSON) carry RFC 3339 strings; compact ones (bincode) an i64.
impl Serialize for Micros {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_rfc3339())
        } else {
            serializer.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Micros;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time or microseconds since the epoch")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Micros, E> {
                Ok(Micros(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Micros, E> {
                i64::try_from(v).map(Micros).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Micros, E> {
                Micros::parse(v).map_err(E::custom)
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_any(V)
        } else {
            deserializer.deserialize_i64(V)
        }
    }
}

fn parse_epoch(s: &str) -> Option<Micros> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = match body.split_once('.') {
        Some((w, f)) => (w, f),
        None => (body, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    let micros = parse_fraction(frac)?;
    let v = secs.checked_mul(US_PER_SEC)?.checked_add(micros)?;
    Some(Micros(if neg { -v } else { v }))
}

/// Digits after the decimal point as microseconds (truncated beyond six digits).
fn parse_fraction(frac: &str) -> Option<i64> {
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut micros = 0i64;
    for i in 0..6 {
        let d = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        micros = micros * 10 + d;
    }
    Some(micros)
}

// Known to panic on some non-ASCII input (issue 11): this hand-written parser is being
// replaced by jiff. Until then the lint is silenced here, and only here.
#[allow(clippy::string_slice)]
fn parse_rfc3339(s: &str) -> Option<Micros> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let part = s.get(from..from + len)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let year = i64::from(num(0, 4)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut civil = Civil {
        year,
        month,
        day,
        hour: 0,
        minute: 0,
        second: 0,
        micros: 0,
    };
    if b.len() == 10 {
        return Some(Micros::from_civil(&civil));
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return None;
    }
    civil.hour = num(11, 2)?;
    civil.minute = num(14, 2)?;
    let mut i = 16;
    if b.get(16) == Some(&b':') {
        civil.second = num(17, 2)?;
        i = 19;
    }
    if civil.hour > 23 || civil.minute > 59 || civil.second > 60 {
        return None;
    }
    if b.get(i) == Some(&b'.') || b.get(i) == Some(&b',') {
        let start = i + 1;
        let mut end = start;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        if end == start {
            return None;
        }
        civil.micros = u32::try_from(parse_fraction(&s[start..end])?).ok()?;
        i = end;
    }
    let offset_secs: i64 = match &s[i..] {
        "" | "Z" | "z" => 0,
        zone => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let z = &zone[1..];
            let (h, m) = match z.len() {
                5 if z.as_bytes()[2] == b':' => (&z[0..2], &z[3..5]),
                4 => (&z[0..2], &z[2..4]),
                2 => (&z[0..2], "00"),
                _ => return None,
            };
            let h: i64 = h
                .parse()
                .ok()
                .filter(|_| h.bytes().all(|c| c.is_ascii_digit()))?;
            let m: i64 = m
                .parse()
                .ok()
                .filter(|_| m.bytes().all(|c| c.is_ascii_digit()))?;
            sign * (h * 3600 + m * 60)
        }
    };
    Some(Micros(
        Micros::from_civil(&civil).0 - offset_secs * US_PER_SEC,
    ))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_the_protocol_example() {
        let t = Micros::from_secs_micros(1_439_853_377, 458_658);
        assert_eq!(t.to_rfc3339(), "2015-08-17T23:16:17.458658Z");
        assert_eq!(Micros::parse("2015-08-17T23:16:17.458658Z"), Ok(t));
    }

    #[test]
    fn parses_the_accepted_spellings() {
        let t = Micros::from_secs(1_439_853_377);
        assert_eq!(Micros::parse("1439853377"), Ok(t));
        assert_eq!(Micros::parse("1439853377.5"), Ok(Micros(t.0 + 500_000)));
        assert_eq!(Micros::parse("2015-08-17T23:16:17Z"), Ok(t));
        assert_eq!(Micros::parse("2015-08-17 23:16:17"), Ok(t));
        assert_eq!(Micros::parse("2015-08-18T01:16:17+02:00"), Ok(t));
        assert_eq!(
            Micros::parse("2015-08-17T23:16"),
            Ok(Micros(t.0 - 17_000_000))
        );
        assert_eq!(
            Micros::parse("2015-08-17"),
            Ok(Micros::from_secs(1_439_769_600))
        );
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "yesterday",
            "2015-13-01",
            "2015-02-30",
            "2015-08-17T25:00:00Z",
            "12ab",
            "2015-08-17T23:16:17+2",
        ] {
            assert!(Micros::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn json_uses_rfc3339_and_accepts_integers() {
        let t = Micros::from_secs_micros(1_439_853_377, 458_658);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2015-08-17T23:16:17.458658Z\"");
        assert_eq!(serde_json::from_str::<Micros>(&json).unwrap(), t);
        assert_eq!(
            serde_json::from_str::<Micros>("1439853377458658").unwrap(),
            t
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(us in -62_135_596_800_000_000i64..253_402_300_799_999_999i64) {
            let t = Micros(us);
            prop_assert_eq!(Micros::parse(&t.to_rfc3339()), Ok(t));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = Micros::parse(&s);
        }
    }
}
