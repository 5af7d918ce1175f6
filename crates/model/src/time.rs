//! Time as microseconds since the Unix epoch, UTC, and the zones times are read and shown in.
//!
//! T-Library stamps events with `AttributeTimeinSecs` + `AttributeTimeinuSecs`; keeping the same
//! resolution means no event time is ever rounded. Every calendar rule — RFC 3339 parsing and
//! formatting, offsets, named zones with their DST rules — is `jiff`'s: the one piece of code
//! for it, here. The IANA database is bundled (`tzdb-bundle-always`), so `Europe/Berlin` works
//! on a machine without `/usr/share/zoneinfo`.

use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};
use jiff::Timestamp;
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

    /// As a jiff timestamp, clamped to jiff's range (years -9999 to 9999).
    pub fn timestamp(self) -> Timestamp {
        Timestamp::from_microsecond(self.0).unwrap_or(if self.0 < 0 {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        })
    }

    pub fn from_timestamp(ts: Timestamp) -> Micros {
        Micros(ts.as_microsecond())
    }

    /// The civil date and time in UTC.
    pub fn to_civil(self) -> Civil {
        Civil::from_datetime(Offset::UTC.to_datetime(self.timestamp()))
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
    /// instead of `T`, a missing zone meaning UTC), a bare date (`2015-08-17`, midnight UTC) or
    /// epoch seconds (`1439853377`, `1439853377.458658`). Never panics, whatever the input.
    pub fn parse(s: &str) -> Result<Micros, TimeParseError> {
        Micros::parse_in(s, &Zone::utc())
    }

    /// [`Micros::parse`], with a time that names no zone read in `zone` (epoch seconds and
    /// times with an offset are absolute).
    pub fn parse_in(s: &str, zone: &Zone) -> Result<Micros, TimeParseError> {
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
        if let Ok(ts) = s.parse::<Timestamp>() {
            return Ok(Micros::from_timestamp(ts));
        }
        match s.parse::<DateTime>() {
            Ok(dt) => Ok(zone.utc_of(dt)),
            Err(_) => Err(err()),
        }
    }
}

/// A civil date and time (in UTC, or in a zone: see [`Zone::to_civil`]).
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

impl Civil {
    fn from_datetime(dt: DateTime) -> Civil {
        let small = |v: i8| u32::try_from(v).unwrap_or(0);
        Civil {
            year: i64::from(dt.year()),
            month: small(dt.month()),
            day: small(dt.day()),
            hour: small(dt.hour()),
            minute: small(dt.minute()),
            second: small(dt.second()),
            micros: u32::try_from(dt.subsec_nanosecond() / 1000).unwrap_or(0),
        }
    }
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

/// A zone times are read or shown in: UTC, a fixed offset, or a named zone with its DST rules.
#[derive(Clone, Debug)]
pub struct Zone {
    tz: TimeZone,
    name: String,
}

impl Default for Zone {
    fn default() -> Self {
        Zone::utc()
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// A zone name that is neither UTC, `local`, an offset nor a known IANA zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneParseError(pub String);

impl fmt::Display for ZoneParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid time zone {:?}: expected UTC, local, an offset such as +02:00 or -0530, or \
             an IANA zone name such as Europe/Berlin",
            self.0
        )
    }
}

impl std::error::Error for ZoneParseError {}

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            tz: TimeZone::UTC,
            name: "UTC".to_owned(),
        }
    }

    /// A fixed offset east of UTC, in seconds; `None` beyond ±18 h (no zone is that far; a
    /// bigger number is a mistake, not a zone).
    pub fn fixed(east_secs: i32) -> Option<Zone> {
        if east_secs == 0 {
            return Some(Zone::utc());
        }
        if east_secs.unsigned_abs() > 18 * 3600 {
            return None;
        }
        let offset = Offset::from_seconds(east_secs).ok()?;
        Some(Zone {
            tz: TimeZone::fixed(offset),
            name: offset_name(east_secs),
        })
    }

    /// `UTC` (or `Z`), `local` (the system's zone; UTC when it cannot be found), an offset
    /// (`+02:00`, `-0530`, `+02`) or an IANA name (`Europe/Berlin`).
    pub fn parse(s: &str) -> Result<Zone, ZoneParseError> {
        let s = s.trim();
        let err = || ZoneParseError(s.to_owned());
        if s.eq_ignore_ascii_case("utc") || s.eq_ignore_ascii_case("z") {
            return Ok(Zone::utc());
        }
        if s.eq_ignore_ascii_case("local") {
            let tz = TimeZone::system();
            let name = tz.iana_name().unwrap_or("local").to_owned();
            return Ok(Zone { tz, name });
        }
        if s.starts_with(['+', '-']) {
            // jiff reads the offset, as part of an RFC 3339 time at the epoch.
            if !s.chars().skip(1).all(|c| c.is_ascii_digit() || c == ':') {
                return Err(err());
            }
            let ts: Timestamp = format!("1970-01-01T00:00:00{s}")
                .parse()
                .map_err(|_| err())?;
            let east = i32::try_from(-ts.as_second()).map_err(|_| err())?;
            return Zone::fixed(east).ok_or_else(err);
        }
        match TimeZone::get(s) {
            Ok(tz) => Ok(Zone {
                tz,
                name: s.to_owned(),
            }),
            Err(_) => Err(err()),
        }
    }

    /// jiff's zone, for calendar arithmetic in it.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// `UTC`, `+02:00` or `Europe/Berlin`, for titles.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Seconds east of UTC in force at `t`.
    pub fn offset_secs(&self, t: Micros) -> i32 {
        self.tz.to_offset(t.timestamp()).seconds()
    }

    /// `Z` in UTC, else the offset in force at `t` (`+02:00`).
    pub fn suffix(&self, t: Micros) -> String {
        match self.offset_secs(t) {
            0 if self.name == "UTC" => "Z".to_owned(),
            east => offset_name(east),
        }
    }

    /// `t` moved by the offset in force at `t`: its UTC fields read as local wall-clock time.
    pub fn local(&self, t: Micros) -> Micros {
        Micros(t.0.saturating_add(i64::from(self.offset_secs(t)) * US_PER_SEC))
    }

    /// The wall-clock date and time at `t` in this zone.
    pub fn to_civil(&self, t: Micros) -> Civil {
        Civil::from_datetime(self.tz.to_datetime(t.timestamp()))
    }

    /// The instant of a wall-clock time in this zone. A time that a DST change skips or
    /// repeats is resolved as RFC 9557 and Temporal do ("compatible": the earlier of a repeated
    /// hour, a skipped one pushed forward).
    pub fn utc_of(&self, dt: DateTime) -> Micros {
        match self.tz.to_ambiguous_timestamp(dt).compatible() {
            Ok(ts) => Micros::from_timestamp(ts),
            Err(_) => Micros::from_timestamp(if dt.year() < 0 {
                Timestamp::MIN
            } else {
                Timestamp::MAX
            }),
        }
    }

    /// A wall-clock time given as "UTC fields" (`local`, as [`Zone::local`] returns) back to
    /// the instant: what a log written in local time needs.
    pub fn utc_of_local(&self, local: Micros) -> Micros {
        if self.name == "UTC" {
            return local;
        }
        self.utc_of(Offset::UTC.to_datetime(local.timestamp()))
    }
}

/// `+02:00`, `-05:30`, `+05:45`.
fn offset_name(east_secs: i32) -> String {
    let a = east_secs.unsigned_abs();
    let sign = if east_secs < 0 { '-' } else { '+' };
    if a.is_multiple_of(60) {
        format!("{sign}{:02}:{:02}", a / 3600, a % 3600 / 60)
    } else {
        format!("{sign}{:02}:{:02}:{:02}", a / 3600, a % 3600 / 60, a % 60)
    }
}

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

    /// Found by a user: the hand-written parser sliced this string inside the `é` and panicked.
    #[test]
    fn non_ascii_inside_an_offset_is_an_error_not_a_panic() {
        for bad in [
            "2015-08-17T23:16+1\u{e9}1",
            "2015-08-17T23:16:17.4\u{e9}Z",
            "2015-08-1\u{e9}",
            "\u{e9}",
        ] {
            assert!(Micros::parse(bad).is_err(), "{bad:?}");
            assert!(Zone::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zones_parse_utc_offsets_and_iana_names() {
        assert_eq!(Zone::parse("UTC").unwrap().name(), "UTC");
        assert_eq!(Zone::parse("Z").unwrap().name(), "UTC");
        assert_eq!(Zone::parse("+02:00").unwrap().name(), "+02:00");
        assert_eq!(Zone::parse("-0530").unwrap().name(), "-05:30");
        assert_eq!(Zone::parse("+05").unwrap().name(), "+05:00");
        assert_eq!(
            Zone::parse("Europe/Berlin").unwrap().name(),
            "Europe/Berlin"
        );
        assert!(Zone::parse("local").is_ok());
        for bad in ["Mars/Olympus", "+2", "+25:00", "02:00", "", "+02:00[x]"] {
            assert!(Zone::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_named_zone_follows_its_dst_rules() {
        let berlin = Zone::parse("Europe/Berlin").unwrap();
        let summer = Micros::parse("2015-08-17T10:00:00Z").unwrap();
        let winter = Micros::parse("2015-12-17T10:00:00Z").unwrap();
        assert_eq!(berlin.offset_secs(summer), 7200);
        assert_eq!(berlin.offset_secs(winter), 3600);
        assert_eq!(berlin.suffix(summer), "+02:00");
        assert_eq!(berlin.to_civil(summer).hour, 12);
        assert_eq!(berlin.to_civil(winter).hour, 11);
        // Wall-clock times back to instants, on both sides of the change (2015-10-25 03:00
        // CEST -> 02:00 CET).
        assert_eq!(
            Micros::parse_in("2015-10-24T12:00:00", &berlin),
            Micros::parse("2015-10-24T10:00:00Z")
        );
        assert_eq!(
            Micros::parse_in("2015-10-26T12:00:00", &berlin),
            Micros::parse("2015-10-26T11:00:00Z")
        );
        // A time with an offset is absolute whatever the zone.
        assert_eq!(
            Micros::parse_in("2015-10-26T12:00:00Z", &berlin),
            Micros::parse("2015-10-26T12:00:00Z")
        );
        assert_eq!(berlin.utc_of_local(berlin.local(summer)), summer);
        assert_eq!(Zone::utc().suffix(summer), "Z");
    }

    #[test]
    fn fixed_zones_from_seconds() {
        // A log header's `Time zone: -19800` is seconds west: India, +05:30.
        let india = Zone::fixed(19_800).unwrap();
        assert_eq!(india.name(), "+05:30");
        let t = Micros::parse("2026-02-02T08:24:59.852Z").unwrap();
        assert_eq!(
            india.local(t),
            Micros::parse("2026-02-02T13:54:59.852Z").unwrap()
        );
        assert_eq!(india.utc_of_local(india.local(t)), t);
        assert!(Zone::fixed(200_000).is_none());
    }

    proptest! {
        #[test]
        fn zone_parse_never_panics(s in "\\PC{0,40}") {
            let _ = Zone::parse(&s);
        }

        #[test]
        fn parse_in_a_zone_never_panics(s in "\\PC{0,40}") {
            let _ = Micros::parse_in(&s, &Zone::fixed(-19_800).unwrap());
        }

        #[test]
        fn offsets_with_arbitrary_unicode_never_panic(s in "2015-08-17T23:16[+-]\\PC{0,6}") {
            let _ = Micros::parse(&s);
        }

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
