//! Which node holds which T-Server's events, and the link-lost event when a node dies.
//!
//! A single `serve` records a T-Server as unavailable when its feed's socket closes; in a
//! cluster the node holding the feed may be the one that died. So every `serve --cluster` node
//! announces, every [`BEAT`], on a plain NATS subject (not the stream), the T-Servers it
//! published events of in the last [`HELD_FOR`]. Every node listens; when a node has not been
//! heard for [`SILENT_AFTER`], each survivor publishes, for each T-Server the dead node held, an
//! `EventLinkDisconnected` built only from the dead node's last announcement (its time, its
//! T-Servers). The survivors build the same bytes, hence the same `Nats-Msg-Id`, so the stream
//! stores the event once however many survivors there are.

use crate::publish::Pipeline;
use crate::Cluster;
use futures_util::StreamExt;
use ivrstate_model::{Envelope, Event, Micros, TLibEvent, TLibKind, TServerName};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a node announces itself.
pub const BEAT: Duration = Duration::from_secs(1);
/// A node not heard for this long is dead.
pub const SILENT_AFTER: Duration = Duration::from_secs(5);
/// A T-Server counts as held by a node for this long after the node last published its events.
pub const HELD_FOR: Duration = Duration::from_secs(60);

/// The T-Servers this node published events of, and when last.
#[derive(Clone, Default)]
pub struct Held(Arc<Mutex<BTreeMap<String, Instant>>>);

impl Held {
    /// Notes the T-Servers of `envelopes` as held by this node now.
    pub fn saw(&self, envelopes: &[Envelope]) {
        let now = Instant::now();
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for e in envelopes {
            if let Event::TLib(t) = &e.event {
                if !held.contains_key(t.tserver.as_str()) {
                    held.insert(t.tserver.as_str().to_owned(), now);
                } else if let Some(at) = held.get_mut(t.tserver.as_str()) {
                    *at = now;
                }
            }
        }
    }

    fn current(&self) -> Vec<String> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|_, at| at.elapsed() < HELD_FOR);
        held.keys().cloned().collect()
    }
}

/// One announcement: `<time micros> <T-Server> <T-Server> ...` (names have no spaces in a
/// T-Server log header; one that does is announced with `_`).
fn announcement(time: Micros, tservers: &[String]) -> String {
    let mut s = time.0.to_string();
    for t in tservers {
        s.push(' ');
        s.push_str(&t.replace(char::is_whitespace, "_"));
    }
    s
}

fn parse_announcement(text: &str) -> Option<(Micros, Vec<String>)> {
    let mut words = text.split_whitespace();
    let time = Micros(words.next()?.parse().ok()?);
    Some((time, words.map(str::to_owned).collect()))
}

/// The event every survivor publishes for a T-Server of a dead node, from its last
/// announcement only.
pub fn link_lost(time: Micros, tserver: &str) -> Envelope {
    Envelope {
        time,
        recorded: time,
        event: Event::TLib(TLibEvent {
            tserver: TServerName::from(tserver),
            source_seq: None,
            kind: TLibKind::LinkDisconnected,
        }),
    }
}

/// Announces this node (`node`: unique per process) and watches the others, until the
/// connection is dropped. `now` is the wall clock (the announcement's time).
pub async fn run(cluster: Cluster, node: String, held: Held, now: fn() -> Micros) {
    let subject = format!("_ivrstate.presence.{}", cluster.config.stream);
    let mut subscription = match cluster.client.subscribe(format!("{subject}.*")).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("presence: cannot subscribe: {e}; a dead node's T-Servers will not be marked unavailable");
            return;
        }
    };
    let pipeline = Pipeline::start(&cluster);
    let own = format!("{subject}.{node}");
    // Each other node: when last heard, and its last announcement.
    let mut others: BTreeMap<String, (Instant, Micros, Vec<String>)> = BTreeMap::new();
    let mut beat = tokio::time::interval(BEAT);
    loop {
        tokio::select! {
            _ = beat.tick() => {
                let text = announcement(now(), &held.current());
                if let Err(e) = cluster.client.publish(own.clone(), text.into()).await {
                    tracing::warn!("presence: cannot announce: {e}");
                }
                let dead: Vec<String> = others
                    .iter()
                    .filter(|(_, (seen, _, _))| seen.elapsed() > SILENT_AFTER)
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in dead {
                    let Some((_, time, tservers)) = others.remove(&n) else { continue };
                    let lost: Vec<Envelope> = tservers
                        .iter()
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .map(|t| link_lost(time, t))
                        .collect();
                    if lost.is_empty() {
                        continue;
                    }
                    tracing::warn!(node = %n, tservers = ?tservers, "a node went silent: recording its T-Servers' links as lost");
                    // One message per T-Server, so that survivors whose views differ in which
                    // T-Servers the dead node held still agree on each one's bytes; the source
                    // names the dead node only, so every survivor's headers are the same too.
                    let source = format!("cluster: node {n} went silent, its links recorded lost");
                    for envelope in lost {
                        if let Err(e) = pipeline
                            .publish(&cluster.config.stream, std::slice::from_ref(&envelope), &source, &[])
                            .await
                        {
                            tracing::error!("presence: cannot publish a link-lost event: {e}");
                        }
                    }
                }
            }
            message = subscription.next() => {
                let Some(message) = message else { return };
                let from = message.subject.as_str().rsplit('.').next().unwrap_or_default().to_owned();
                if from == node {
                    continue;
                }
                if let Some((time, tservers)) = std::str::from_utf8(&message.payload).ok().and_then(parse_announcement) {
                    others.insert(from, (Instant::now(), time, tservers));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip_and_the_event_depends_on_them_only() {
        let text = announcement(Micros(42), &["TS_A".into(), "TS B".into()]);
        assert_eq!(text, "42 TS_A TS_B");
        assert_eq!(
            parse_announcement(&text),
            Some((Micros(42), vec!["TS_A".to_owned(), "TS_B".to_owned()]))
        );
        assert_eq!(parse_announcement("x"), None);
        assert_eq!(link_lost(Micros(42), "TS_A"), link_lost(Micros(42), "TS_A"));
    }
}
