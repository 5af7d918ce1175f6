//! The configuration file (docs/interface.md "Configuration") and its difference to the stored
//! configuration, as [`ConfigEvent`]s.
//!
//! Configuration is audited like everything else: `config apply` never overwrites, it records
//! what changed. Applying the same file twice yields no events the second time.

use ivrstate_model::{
    ConfigEvent, ConfigOption, ConfigValue, Dn, IvrConfig, IvrName, PortConfig, PortNum,
    TServerName,
};
pub use ivrstate_projection::Config;
use ivrstate_projection::TServerConfig;
use serde::Deserialize;
use std::ops::Range;

/// A configuration file that cannot be used; the message names the file, line and field.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: Option<FileServer>,
    #[serde(default)]
    tserver: Vec<toml::Spanned<FileTServer>>,
    #[serde(default)]
    ivr: Vec<toml::Spanned<FileIvr>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTServer {
    name: String,
    switch: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIvr {
    name: String,
    tservers: Option<toml::Spanned<Vec<String>>>,
    #[serde(default)]
    options: toml::Table,
    #[serde(default)]
    port: Vec<toml::Spanned<FilePort>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePort {
    num: String,
    dn: String,
    tserver: Option<String>,
}

/// Parses and validates a configuration file's text into the configuration it describes (the
/// projection's [`Config`], the same type the fold builds from config events). `file` is used in
/// error messages.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let err = |span: Option<Range<usize>>, message: String| ConfigError {
        file: file.to_owned(),
        line: span.map_or(1, |s| line_of(text, s.start)),
        message,
    };
    let parsed: FileConfig = toml::from_str(text).map_err(|e| {
        // toml's own message spans several lines with a caret; keep the first line of
        // the explanation and report the line number in our one-line format.
        let message = e
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_owned();
        err(e.span(), message)
    })?;

    let mut config = Config {
        version: parsed.server.and_then(|s| s.version),
        ..Config::default()
    };
    for ts in &parsed.tserver {
        let name = TServerName::from(ts.get_ref().name.as_str());
        if name.as_str().is_empty() {
            return Err(err(
                Some(ts.span()),
                "[[tserver]]: field `name` is empty".into(),
            ));
        }
        let switch = TServerConfig {
            switch: ts.get_ref().switch.clone(),
        };
        if config.tservers.insert(name.clone(), switch).is_some() {
            return Err(err(
                Some(ts.span()),
                format!("[[tserver]] `{name}` is defined twice"),
            ));
        }
    }
    for spanned in &parsed.ivr {
        let ivr = spanned.get_ref();
        let name = IvrName::from(ivr.name.as_str());
        let at = Some(spanned.span());
        if name.as_str().is_empty() {
            return Err(err(at, "[[ivr]]: field `name` is empty".into()));
        }
        let tservers: Vec<TServerName> = ivr
            .tservers
            .iter()
            .flat_map(|t| t.get_ref())
            .map(|t| TServerName::from(t.as_str()))
            .collect();
        for ts in &tservers {
            if !config.tservers.contains_key(ts) {
                return Err(err(
                        ivr.tservers.as_ref().map(toml::Spanned::span).or(at.clone()),
                        format!("[[ivr]] `{name}`: field `tservers` names `{ts}`, which no [[tserver]] defines"),
                    ));
            }
        }
        let options = options_from_table(&ivr.options).map_err(|m| {
            err(
                at.clone(),
                format!("[[ivr]] `{name}`: field `options`: {m}"),
            )
        })?;
        let ivr_config = IvrConfig {
            name: name.clone(),
            tservers: tservers.clone(),
            options,
        };
        if config.ivrs.insert(name.clone(), ivr_config).is_some() {
            return Err(err(at, format!("[[ivr]] `{name}` is defined twice")));
        }
        for port in &ivr.port {
            let p = port.get_ref();
            let at = Some(port.span());
            let tserver = match (&p.tserver, tservers.as_slice()) {
                    (Some(t), _) => TServerName::from(t.as_str()),
                    (None, [only]) => only.clone(),
                    (None, _) => {
                        return Err(err(
                            at,
                            format!(
                                "[[ivr.port]] `{}` of `{name}`: field `tserver` is required because the IVR uses {} T-Servers",
                                p.num,
                                tservers.len()
                            ),
                        ))
                    }
                };
            if !tservers.contains(&tserver) {
                return Err(err(
                        at,
                        format!(
                            "[[ivr.port]] `{}` of `{name}`: field `tserver` = `{tserver}` is not among the IVR's tservers",
                            p.num
                        ),
                    ));
            }
            if p.num.is_empty() || p.dn.is_empty() {
                return Err(err(
                    at,
                    format!("[[ivr.port]] of `{name}`: fields `num` and `dn` must not be empty"),
                ));
            }
            let num = PortNum::from(p.num.as_str());
            let port_config = PortConfig {
                ivr: name.clone(),
                port: num.clone(),
                dn: Dn::from(p.dn.as_str()),
                tserver,
            };
            let ports = config.ports.entry(name.clone()).or_default();
            if ports.insert(num, port_config).is_some() {
                return Err(err(
                    at,
                    format!("[[ivr.port]] `{}` of `{name}` is defined twice", p.num),
                ));
            }
        }
    }
    Ok(config)
}

/// The events that turn `stored` into `target`, in an order that never refers to something
/// absent: additions of containers before their contents, removals of contents before their
/// containers.
pub fn diff(stored: &Config, target: &Config) -> Vec<ConfigEvent> {
    let mut events = Vec::new();
    if stored.version != target.version {
        events.push(ConfigEvent::ServerSettings {
            version: target.version.clone(),
        });
    }
    for (name, ts) in &target.tservers {
        let switch = ts.switch.clone();
        match stored.tservers.get(name) {
            None => events.push(ConfigEvent::TServerAdded {
                name: name.clone(),
                switch,
            }),
            Some(old) if old != ts => events.push(ConfigEvent::TServerChanged {
                name: name.clone(),
                switch,
            }),
            Some(_) => {}
        }
    }
    for (name, ivr) in &target.ivrs {
        match stored.ivrs.get(name) {
            None => events.push(ConfigEvent::IvrAdded(ivr.clone())),
            Some(old) if old != ivr => events.push(ConfigEvent::IvrChanged(ivr.clone())),
            Some(_) => {}
        }
    }
    for old in all_ports(stored) {
        if target.port(old.ivr.as_str(), old.port.as_str()).is_none() {
            events.push(ConfigEvent::PortRemoved {
                ivr: old.ivr.clone(),
                port: old.port.clone(),
            });
        }
    }
    for port in all_ports(target) {
        match stored.port(port.ivr.as_str(), port.port.as_str()) {
            None => events.push(ConfigEvent::PortAdded(port.clone())),
            Some(old) if old != port => events.push(ConfigEvent::PortChanged(port.clone())),
            Some(_) => {}
        }
    }
    for name in stored.ivrs.keys() {
        if !target.ivrs.contains_key(name) {
            events.push(ConfigEvent::IvrRemoved { name: name.clone() });
        }
    }
    for name in stored.tservers.keys() {
        if !target.tservers.contains_key(name) {
            events.push(ConfigEvent::TServerRemoved { name: name.clone() });
        }
    }
    events
}

/// All configured ports, sorted by (IVR, PortNum).
fn all_ports(config: &Config) -> impl Iterator<Item = &PortConfig> {
    config.ports.values().flat_map(|ports| ports.values())
}

/// The configuration as a TOML file in the docs/interface.md layout: `config show` prints it and
/// `config apply` of that output records nothing.
pub fn to_toml(config: &Config) -> String {
    let mut root = toml::Table::new();
    if let Some(version) = &config.version {
        let mut server = toml::Table::new();
        server.insert("version".into(), version.clone().into());
        root.insert("server".into(), server.into());
    }
    let tservers: Vec<toml::Value> = config
        .tservers
        .iter()
        .map(|(name, ts)| {
            let mut t = toml::Table::new();
            t.insert("name".into(), name.to_string().into());
            if let Some(switch) = &ts.switch {
                t.insert("switch".into(), switch.clone().into());
            }
            t.into()
        })
        .collect();
    if !tservers.is_empty() {
        root.insert("tserver".into(), tservers.into());
    }
    let ivrs: Vec<toml::Value> = config
        .ivrs
        .values()
        .map(|ivr| {
            let mut t = toml::Table::new();
            t.insert("name".into(), ivr.name.to_string().into());
            let tservers: Vec<toml::Value> =
                ivr.tservers.iter().map(|s| s.to_string().into()).collect();
            t.insert("tservers".into(), tservers.into());
            if !ivr.options.is_empty() {
                t.insert("options".into(), options_to_table(&ivr.options).into());
            }
            let ports: Vec<toml::Value> = all_ports(config)
                .filter(|p| p.ivr == ivr.name)
                .map(|p| {
                    let mut pt = toml::Table::new();
                    pt.insert("num".into(), p.port.to_string().into());
                    pt.insert("dn".into(), p.dn.to_string().into());
                    pt.insert("tserver".into(), p.tserver.to_string().into());
                    pt.into()
                })
                .collect();
            if !ports.is_empty() {
                t.insert("port".into(), ports.into());
            }
            t.into()
        })
        .collect();
    if !ivrs.is_empty() {
        root.insert("ivr".into(), ivrs.into());
    }
    toml::to_string(&root).unwrap_or_default()
}

/// The configuration as JSON for `config show --json`.
pub fn to_json(config: &Config) -> serde_json::Value {
    let options =
        |o: &[ConfigOption]| serde_json::to_value(options_to_table(o)).unwrap_or_default();
    serde_json::json!({
        "version": config.version,
        "tservers": config.tservers.iter().map(|(name, ts)| serde_json::json!({"name": name, "switch": ts.switch})).collect::<Vec<_>>(),
        "ivrs": config.ivrs.values().map(|ivr| serde_json::json!({
            "name": ivr.name,
            "tservers": ivr.tservers,
            "options": options(&ivr.options),
            "ports": all_ports(config).filter(|p| p.ivr == ivr.name).map(|p| serde_json::json!({
                "num": p.port, "dn": p.dn, "tserver": p.tserver,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// One line describing a configuration event, for `config apply`'s output.
pub fn describe(event: &ConfigEvent) -> String {
    match event {
        ConfigEvent::ServerSettings { version } => {
            format!(
                "server version set to {}",
                version.as_deref().unwrap_or("(none)")
            )
        }
        ConfigEvent::TServerAdded { name, .. } => format!("T-Server {name} added"),
        ConfigEvent::TServerChanged { name, .. } => format!("T-Server {name} changed"),
        ConfigEvent::TServerRemoved { name } => format!("T-Server {name} removed"),
        ConfigEvent::IvrAdded(ivr) => format!("IVR {} added", ivr.name),
        ConfigEvent::IvrChanged(ivr) => format!("IVR {} changed", ivr.name),
        ConfigEvent::IvrRemoved { name } => format!("IVR {name} removed"),
        ConfigEvent::PortAdded(p) => format!(
            "port {}:{} added (DN {} on {})",
            p.ivr, p.port, p.dn, p.tserver
        ),
        ConfigEvent::PortChanged(p) => format!(
            "port {}:{} changed (DN {} on {})",
            p.ivr, p.port, p.dn, p.tserver
        ),
        ConfigEvent::PortRemoved { ivr, port } => format!("port {ivr}:{port} removed"),
    }
}

fn options_to_table(options: &[ConfigOption]) -> toml::Table {
    options
        .iter()
        .map(|o| {
            let value = match &o.value {
                ConfigValue::Int(i) => toml::Value::Integer(*i),
                ConfigValue::Str(s) => toml::Value::String(s.clone()),
                ConfigValue::List(l) => toml::Value::Table(options_to_table(l)),
            };
            (o.name.clone(), value)
        })
        .collect()
}

/// TOML options to LoginResp ConfigOptions: integers are `Int`, strings `Str`, tables nested
/// `List`s. Anything else (floats, booleans, dates, arrays) is refused rather than guessed.
fn options_from_table(table: &toml::Table) -> Result<Vec<ConfigOption>, String> {
    table
        .iter()
        .map(|(name, value)| {
            let value = match value {
                toml::Value::Integer(i) => ConfigValue::Int(*i),
                toml::Value::String(s) => ConfigValue::Str(s.clone()),
                toml::Value::Table(t) => ConfigValue::List(options_from_table(t)?),
                other => {
                    return Err(format!(
                        "`{name}` is a {}; options are strings, integers or tables",
                        other.type_str()
                    ))
                }
            };
            Ok(ConfigOption {
                name: name.clone(),
                value,
            })
        })
        .collect()
}

fn line_of(text: &str, byte: usize) -> usize {
    let end = byte.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
[server]
version = "8.5.000.01"

[[tserver]]
name = "TS_SIP"
switch = "SIP_Switch"

[[ivr]]
name = "IVR_1"
tservers = ["TS_SIP"]
options = { Timeout = "30", Mode = "Legacy", Retries = 3 }

[[ivr.port]]
num = "01"
dn = "7001"

[[ivr.port]]
num = "02"
dn = "7002"
tserver = "TS_SIP"
"#;

    #[test]
    fn parses_the_interface_example() {
        let c = parse(SAMPLE, "ivr.toml").unwrap();
        assert_eq!(c.version.as_deref(), Some("8.5.000.01"));
        assert_eq!(
            c.tservers[&TServerName::from("TS_SIP")].switch.as_deref(),
            Some("SIP_Switch")
        );
        let ivr = &c.ivrs[&IvrName::from("IVR_1")];
        assert_eq!(ivr.tservers, vec![TServerName::from("TS_SIP")]);
        assert!(ivr.options.contains(&ConfigOption {
            name: "Retries".into(),
            value: ConfigValue::Int(3)
        }));
        let p = c.port("IVR_1", "01").unwrap();
        assert_eq!((p.dn.as_str(), p.tserver.as_str()), ("7001", "TS_SIP"));
        assert_eq!(all_ports(&c).count(), 2);
    }

    #[test]
    fn diff_of_identical_configs_is_empty_and_diff_from_empty_rebuilds_it() {
        let c = parse(SAMPLE, "ivr.toml").unwrap();
        assert!(diff(&c, &c).is_empty());
        let events = diff(&Config::default(), &c);
        // Folding the events (as the projection does with the log) gives back the file.
        let mut state = ivrstate_projection::State::default();
        for (i, e) in events.iter().enumerate() {
            let record = ivrstate_model::Record {
                seq: i as u64 + 1,
                envelope: ivrstate_model::Envelope {
                    time: ivrstate_model::Micros(0),
                    recorded: ivrstate_model::Micros(0),
                    event: ivrstate_model::Event::Config(e.clone()),
                },
            };
            state.apply_record(&record);
        }
        assert_eq!(state.config(), &c);
    }

    #[test]
    fn diff_records_removals_and_changes() {
        let old = parse(SAMPLE, "a").unwrap();
        let new_text = SAMPLE
            .replace("dn = \"7002\"", "dn = \"7012\"")
            .replace("[[ivr.port]]\nnum = \"01\"\ndn = \"7001\"\n", "");
        let new = parse(&new_text, "b").unwrap();
        let events = diff(&old, &new);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(
            matches!(&events[0], ConfigEvent::PortRemoved { port, .. } if port.as_str() == "01")
        );
        assert!(matches!(&events[1], ConfigEvent::PortChanged(p) if p.dn.as_str() == "7012"));
    }

    #[test]
    fn shown_toml_applies_as_no_change() {
        let c = parse(SAMPLE, "ivr.toml").unwrap();
        let shown = to_toml(&c);
        let again = parse(&shown, "shown.toml").unwrap();
        assert_eq!(again, c, "{shown}");
        assert!(diff(&c, &again).is_empty());
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let bad = SAMPLE.replace("dn = \"7001\"", "dn = 7001");
        let e = parse(&bad, "ivr.toml").unwrap_err();
        assert_eq!(e.line, 16, "{e}");
        assert!(e.to_string().starts_with("ivr.toml:16: "), "{e}");

        let bad = SAMPLE.replace("tservers = [\"TS_SIP\"]", "tservers = [\"TS_X\"]");
        let e = parse(&bad, "ivr.toml").unwrap_err();
        assert!(
            e.message.contains("tservers") && e.message.contains("TS_X"),
            "{e}"
        );
        assert_eq!(e.line, 11, "the line of the field: {e}");

        let bad = SAMPLE.replace("tservers = [\"TS_SIP\"]", "tservers = []");
        let e = parse(&bad, "ivr.toml").unwrap_err();
        assert!(e.message.contains("field `tserver` is required"), "{e}");

        let e = parse("[[ivr]]\nname = \"X\"\ncolour = 1\n", "c.toml").unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
    }
}
