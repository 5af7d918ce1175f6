//! The fold: [`State::apply`] and the routing of its effects to IVRs.
//!
//! Invariant kept here (docs/design.md 5): `apply` is pure and total. It reads nothing but its
//! arguments, never panics, and turns inconsistent input (a Ready without a login, a removal of
//! something never added, an event older than the state it would change) into a
//! [`FoldAnomaly`] while still folding it the documented way, so the same log always gives the
//! same state. The agent rules themselves are in `rules.rs`.
//!
//! Configuration decisions (docs/protocol.md section 4, "a configuration change means no further
//! request can succeed on that port"):
//! - `PortAdded` makes the port OK and publishes its Agent status (the status of its DN).
//! - `PortChanged` remaps the port to its new DN/T-Server and makes it Unavailable; it stays
//!   Unavailable (no automatic OK afterwards). Remove and re-add the port to bring it back.
//! - `PortRemoved` and `IvrRemoved` make the ports Unavailable; their state is kept (status shows
//!   them) but they no longer map to a DN, so agent changes no longer reach them.
//! - `TServerRemoved` makes the T-Server Unavailable (the IVR Server would close its link);
//!   its entry stays because it appears in the log.

use crate::change::{Applied, Change, EntityKey, FoldAnomaly, MonitorInfo};
use crate::rules;
use crate::state::{AgentState, DnSlot, PortRef, PortState, ServerState, State, TServerConfig};
use crate::table::SortedHashMap;
use ivrstate_model::{
    AgentEvent, AnomalyKind, Availability, ConfigEvent, Dn, Event, IvrConfig, IvrName, Micros,
    PortConfig, PortNum, Record, Seq, TLibEvent, TLibKind, TServerName,
};

/// Where in the log a record is: passed down instead of the record so rules see only what they use.
#[derive(Clone, Copy)]
pub(crate) struct At {
    pub(crate) seq: Seq,
    pub(crate) time: Micros,
}

impl State {
    /// Folds one record. Appends to `out` the MonitorInfo changes it causes, the entities whose
    /// state it changed and the anomalies it found; `out` is not cleared here so that the caller
    /// can reuse it (or collect a batch).
    pub fn apply(&mut self, rec: &Record, out: &mut Applied) {
        let at = At {
            seq: rec.seq,
            time: rec.envelope.time,
        };
        self.last_seq = self.last_seq.max(at.seq);
        self.last_time = Some(self.last_time.map_or(at.time, |t| t.max(at.time)));
        match &rec.envelope.event {
            Event::TLib(t) => self.apply_tlib(at, t, out),
            Event::Config(c) => self.apply_config(at, c, out),
            // Recorded for audit only: a client's request does not change the switch's state,
            // and a source's anomaly was already handled by that source.
            Event::Request(_) | Event::Anomaly(_) => {}
        }
    }

    /// Folds one record and returns only its changes (for callers outside the hot loop).
    pub fn apply_record(&mut self, rec: &Record) -> Vec<Change> {
        let mut out = Applied::new();
        self.apply(rec, &mut out);
        out.changes
    }

    fn apply_tlib(&mut self, at: At, t: &TLibEvent, out: &mut Applied) {
        match &t.kind {
            TLibKind::Agent(ev) => self.apply_agent(at, &t.tserver, ev, out),
            TLibKind::AddressInfo(info) => {
                self.apply_dn(at, &t.tserver, &info.dn, out, |a, fresh, out| {
                    rules::address_info(a, fresh, at, &t.tserver, info, out)
                })
            }
            // Link events change only the Server status: agent states go on (docs/design.md).
            TLibKind::LinkConnected => {
                self.update_server(at, &t.tserver, out, |s| s.status = Availability::Ok)
            }
            // The feed socket that carried the T-Server closed: Unavailable, as the link
            // going down is.
            TLibKind::LinkDisconnected | TLibKind::SocketClosed => {
                self.update_server(at, &t.tserver, out, |s| {
                    s.status = Availability::Unavailable
                })
            }
        }
    }

    fn apply_agent(&mut self, at: At, ts: &TServerName, ev: &AgentEvent, out: &mut Applied) {
        self.apply_dn(at, ts, &ev.dn, out, |a, _, out| {
            rules::agent_event(a, at, ts, ev, out)
        })
    }

    /// Runs `rule` on the state of (ts, dn), creating it (LoggedOut) on first sight, then records
    /// the entity as touched and routes a status change to the ports that show this DN. One
    /// hash lookup finds both the state and the ports (`DnSlot`).
    fn apply_dn(
        &mut self,
        at: At,
        ts: &TServerName,
        dn: &Dn,
        out: &mut Applied,
        rule: impl FnOnce(&mut AgentState, bool, &mut Applied) -> rules::Outcome,
    ) {
        // A T-Server seen in T-Library events is tracked even if never configured.
        self.track_server(at, ts, out);
        // One T-Server lookup for the usual case (its DN table exists).
        if let Some(dns) = self.dns.get_mut(ts.as_str()) {
            return Self::apply_in(dns, at, ts, dn, out, rule);
        }
        let dns = self.dns.entry(ts.clone()).or_default();
        Self::apply_in(dns, at, ts, dn, out, rule)
    }

    /// [`Self::apply_dn`] within the DN table of the event's T-Server.
    fn apply_in(
        dns: &mut SortedHashMap<Dn, DnSlot>,
        at: At,
        ts: &TServerName,
        dn: &Dn,
        out: &mut Applied,
        rule: impl FnOnce(&mut AgentState, bool, &mut Applied) -> rules::Outcome,
    ) {
        let (outcome, ports) = match dns.get_mut(dn.as_str()) {
            Some(DnSlot {
                agent: Some(a),
                ports,
            }) => (rule(a, false, out), &ports[..]),
            Some(slot) => {
                let mut a = AgentState::logged_out(at.time, at.seq);
                let o = rule(&mut a, true, out);
                slot.agent = Some(a);
                (o.fresh(), &slot.ports[..])
            }
            None => {
                let mut a = AgentState::logged_out(at.time, at.seq);
                let o = rule(&mut a, true, out);
                dns.insert(
                    dn.clone(),
                    DnSlot {
                        agent: Some(a),
                        ports: Vec::new(),
                    },
                );
                (o.fresh(), &[][..])
            }
        };
        if let Some(status) = outcome.new_status.filter(|_| out.collects_changes()) {
            for r in ports {
                out.changes.push(Change {
                    ivr: r.ivr.clone(),
                    info: MonitorInfo::Agent {
                        port: r.port.clone(),
                        status,
                    },
                });
            }
        }
        if outcome.touched && out.collects_touched() {
            out.touched.push(EntityKey::Agent(ts.clone(), dn.clone()));
        }
    }

    /// Starts tracking a T-Server (Unavailable until EventLinkConnected) if it is not yet.
    fn track_server(&mut self, at: At, name: &TServerName, out: &mut Applied) -> bool {
        if self.servers.contains_key(name.as_str()) {
            return false;
        }
        let cfg = self.config.tservers.get(name.as_str());
        self.servers.insert(
            name.clone(),
            ServerState {
                status: Availability::Unavailable,
                switch: cfg.and_then(|c| c.switch.clone()),
                since: at.time,
                seq: at.seq,
                configured: cfg.is_some(),
            },
        );
        out.touch(|| EntityKey::Server(name.clone()));
        true
    }

    /// Applies `f` to a T-Server's state (tracking it first); records it as touched if it
    /// changed, and publishes a Server change to the IVRs that use it if what they see changed.
    fn update_server(
        &mut self,
        at: At,
        name: &TServerName,
        out: &mut Applied,
        f: impl FnOnce(&mut ServerState),
    ) {
        let fresh = self.track_server(at, name, out);
        let before = self.server_info(name);
        let Some(s) = self.servers.get_mut(name.as_str()) else {
            return;
        };
        let old = s.clone();
        f(s);
        if *s == old {
            return;
        }
        if s.status != old.status || s.switch != old.switch {
            s.since = at.time;
            s.seq = at.seq;
        }
        if !fresh {
            out.touch(|| EntityKey::Server(name.clone()));
        }
        let after = self.server_info(name);
        if after != before || fresh {
            self.route_server(name, after, out);
        }
    }

    fn route_server(&self, name: &TServerName, info: MonitorInfo, out: &mut Applied) {
        for ivr in self
            .config
            .ivrs
            .values()
            .filter(|i| i.tservers.contains(name))
        {
            out.change(|| Change {
                ivr: ivr.name.clone(),
                info: info.clone(),
            });
        }
    }

    fn apply_config(&mut self, at: At, ev: &ConfigEvent, out: &mut Applied) {
        match ev {
            ConfigEvent::ServerSettings { version } => self.config.version.clone_from(version),
            ConfigEvent::TServerAdded { name, switch } => {
                if self.config.tservers.contains_key(name.as_str()) {
                    anomaly(
                        out,
                        at,
                        Some(name),
                        None,
                        "TServerAdded for a T-Server already configured",
                    );
                }
                self.upsert_tserver(at, name, switch, out);
            }
            ConfigEvent::TServerChanged { name, switch } => {
                if !self.config.tservers.contains_key(name.as_str()) {
                    anomaly(
                        out,
                        at,
                        Some(name),
                        None,
                        "TServerChanged for a T-Server never added",
                    );
                }
                self.upsert_tserver(at, name, switch, out);
            }
            ConfigEvent::TServerRemoved { name } => {
                if self.config.tservers.remove(name.as_str()).is_none() {
                    anomaly(
                        out,
                        at,
                        Some(name),
                        None,
                        "TServerRemoved for a T-Server never added",
                    );
                    return;
                }
                self.update_server(at, name, out, |s| {
                    s.configured = false;
                    s.status = Availability::Unavailable;
                });
            }
            ConfigEvent::IvrAdded(cfg) => {
                if self.config.ivrs.contains_key(cfg.name.as_str()) {
                    anomaly(
                        out,
                        at,
                        None,
                        None,
                        &format!("IvrAdded for IVR {} already configured", cfg.name),
                    );
                }
                self.upsert_ivr(cfg, out);
            }
            ConfigEvent::IvrChanged(cfg) => {
                if !self.config.ivrs.contains_key(cfg.name.as_str()) {
                    anomaly(
                        out,
                        at,
                        None,
                        None,
                        &format!("IvrChanged for IVR {} never added", cfg.name),
                    );
                }
                self.upsert_ivr(cfg, out);
            }
            ConfigEvent::IvrRemoved { name } => self.remove_ivr(at, name, out),
            ConfigEvent::PortAdded(pc) => self.add_port(at, pc, out),
            ConfigEvent::PortChanged(pc) => self.change_port(at, pc, out),
            ConfigEvent::PortRemoved { ivr, port } => {
                if self.unconfigure_port(ivr, port).is_none() {
                    anomaly(
                        out,
                        at,
                        None,
                        None,
                        &format!("PortRemoved for port {ivr}:{port} never added"),
                    );
                    return;
                }
                self.set_port_unavailable(at, ivr, port, out);
            }
        }
    }

    fn upsert_tserver(
        &mut self,
        at: At,
        name: &TServerName,
        switch: &Option<String>,
        out: &mut Applied,
    ) {
        self.config.tservers.insert(
            name.clone(),
            TServerConfig {
                switch: switch.clone(),
            },
        );
        self.update_server(at, name, out, |s| {
            s.configured = true;
            s.switch.clone_from(switch);
        });
    }

    /// Adds or replaces an IVR; a T-Server it newly uses gets its current Server status published
    /// to it (a logged-in client learns about it as it would at login).
    fn upsert_ivr(&mut self, cfg: &IvrConfig, out: &mut Applied) {
        let old = self.config.ivrs.insert(cfg.name.clone(), cfg.clone());
        for ts in &cfg.tservers {
            if old.as_ref().is_some_and(|o| o.tservers.contains(ts)) {
                continue;
            }
            out.change(|| Change {
                ivr: cfg.name.clone(),
                info: self.server_info(ts),
            });
        }
    }

    fn remove_ivr(&mut self, at: At, name: &IvrName, out: &mut Applied) {
        if self.config.ivrs.remove(name.as_str()).is_none() {
            anomaly(
                out,
                at,
                None,
                None,
                &format!("IvrRemoved for IVR {name} never added"),
            );
        }
        let Some(ports) = self.config.ports.remove(name.as_str()) else {
            return;
        };
        for (port, pc) in ports {
            self.unmap_port(&pc);
            self.set_port_unavailable(at, name, &port, out);
        }
    }

    fn add_port(&mut self, at: At, pc: &PortConfig, out: &mut Applied) {
        if self.unconfigure_port(&pc.ivr, &pc.port).is_some() {
            anomaly(
                out,
                at,
                Some(&pc.tserver),
                Some(&pc.dn),
                &format!(
                    "PortAdded for port {}:{} already configured",
                    pc.ivr, pc.port
                ),
            );
        }
        self.configure_port(pc);
        self.set_port(at, pc, Availability::Ok, out);
        // A client sees the port come up, then the agent state of the DN it now shows.
        out.change(|| Change {
            ivr: pc.ivr.clone(),
            info: MonitorInfo::Port {
                port: pc.port.clone(),
                status: Availability::Ok,
            },
        });
        let status = self.dn_status(pc.tserver.as_str(), pc.dn.as_str());
        out.change(|| Change {
            ivr: pc.ivr.clone(),
            info: MonitorInfo::Agent {
                port: pc.port.clone(),
                status,
            },
        });
    }

    fn change_port(&mut self, at: At, pc: &PortConfig, out: &mut Applied) {
        if self.unconfigure_port(&pc.ivr, &pc.port).is_none() {
            anomaly(
                out,
                at,
                Some(&pc.tserver),
                Some(&pc.dn),
                &format!("PortChanged for port {}:{} never added", pc.ivr, pc.port),
            );
        }
        self.configure_port(pc);
        if self.set_port(at, pc, Availability::Unavailable, out) {
            out.change(|| Change {
                ivr: pc.ivr.clone(),
                info: MonitorInfo::Port {
                    port: pc.port.clone(),
                    status: Availability::Unavailable,
                },
            });
        }
    }

    /// Removes a port from the configuration and from the DN routing; returns its old config.
    fn unconfigure_port(&mut self, ivr: &IvrName, port: &PortNum) -> Option<PortConfig> {
        let ports = self.config.ports.get_mut(ivr.as_str())?;
        let old = ports.remove(port.as_str())?;
        if ports.is_empty() {
            self.config.ports.remove(ivr.as_str());
        }
        self.unmap_port(&old);
        Some(old)
    }

    fn configure_port(&mut self, pc: &PortConfig) {
        self.config
            .ports
            .entry(pc.ivr.clone())
            .or_default()
            .insert(pc.port.clone(), pc.clone());
        let refs = &mut self
            .dns
            .entry(pc.tserver.clone())
            .or_default()
            .entry(pc.dn.clone())
            .or_default()
            .ports;
        let r = PortRef {
            ivr: pc.ivr.clone(),
            port: pc.port.clone(),
        };
        // Sorted by (IVR, port) so that agent changes come out in the order views use.
        let pos = refs.partition_point(|x| (&x.ivr, &x.port) < (&r.ivr, &r.port));
        refs.insert(pos, r);
    }

    /// Removes a port from its DN's routing; forgets a DN slot left with neither agent nor port.
    fn unmap_port(&mut self, pc: &PortConfig) {
        let Some(dns) = self.dns.get_mut(pc.tserver.as_str()) else {
            return;
        };
        if let Some(slot) = dns.get_mut(pc.dn.as_str()) {
            slot.ports
                .retain(|r| !(r.ivr == pc.ivr && r.port == pc.port));
            if slot.ports.is_empty() && slot.agent.is_none() {
                dns.remove(pc.dn.as_str());
            }
        }
        if dns.is_empty() {
            self.dns.remove(pc.tserver.as_str());
        }
    }

    /// Sets a port's state; returns true if its status changed (or the port is new).
    fn set_port(
        &mut self,
        at: At,
        pc: &PortConfig,
        status: Availability,
        out: &mut Applied,
    ) -> bool {
        let ports = self.ports.entry(pc.ivr.clone()).or_default();
        let new = PortState {
            status,
            dn: pc.dn.clone(),
            tserver: pc.tserver.clone(),
            since: at.time,
            seq: at.seq,
        };
        let status_changed = match ports.get_mut(pc.port.as_str()) {
            Some(old) => {
                if old.status == status && old.dn == new.dn && old.tserver == new.tserver {
                    return false;
                }
                let changed = old.status != status;
                if !changed {
                    // Same status, new mapping: the status has lasted since before.
                    old.dn = new.dn;
                    old.tserver = new.tserver;
                } else {
                    *old = new;
                }
                changed
            }
            None => {
                ports.insert(pc.port.clone(), new);
                true
            }
        };
        out.touch(|| EntityKey::Port(pc.ivr.clone(), pc.port.clone()));
        status_changed
    }

    /// Marks a known port Unavailable and publishes that if it was not already.
    fn set_port_unavailable(&mut self, at: At, ivr: &IvrName, port: &PortNum, out: &mut Applied) {
        let Some(p) = self
            .ports
            .get_mut(ivr.as_str())
            .and_then(|ps| ps.get_mut(port.as_str()))
        else {
            return;
        };
        if p.status == Availability::Unavailable {
            return;
        }
        p.status = Availability::Unavailable;
        p.since = at.time;
        p.seq = at.seq;
        out.touch(|| EntityKey::Port(ivr.clone(), port.clone()));
        out.change(|| Change {
            ivr: ivr.clone(),
            info: MonitorInfo::Port {
                port: port.clone(),
                status: Availability::Unavailable,
            },
        });
    }
}

/// Records a configuration anomaly (kind Other: the model has no finer kind for these).
fn anomaly(
    out: &mut Applied,
    at: At,
    tserver: Option<&TServerName>,
    dn: Option<&Dn>,
    detail: &str,
) {
    out.anomalies.push(FoldAnomaly {
        seq: at.seq,
        kind: AnomalyKind::Other,
        tserver: tserver.cloned(),
        dn: dn.cloned(),
        detail: detail.to_owned(),
    });
}
