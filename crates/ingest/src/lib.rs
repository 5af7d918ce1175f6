//! Where events come from: the T-Server log and NDJSON parsers (`parse`) and the file follower
//! (`follow`). What they produce is appended through `ivrstate-store`.

pub mod follow;
pub mod parse;
