//! The JSON of an image that is not a layer, read as what it is: the image
//! config (its `config`, `container_config` and `history`, where ENV,
//! LABEL, ARG values and RUN lines land) and the per-layer `json` copies of
//! it that legacy exports add. A form found there is named by its field or
//! history entry, as `docker inspect` and `docker history` would show it,
//! so the same leak in several copies is one finding, not one per file.

use super::Location;
use pulp_auth_config::forms::Matcher;
use serde_json::{Map, Value};

/// What an export's JSON file is.
pub enum Json<'a> {
    /// The image config (OCI image spec): has `rootfs`.
    Image(&'a Map<String, Value>),
    /// A legacy export's `<id>/json`: a layer's copy of the config.
    LegacyLayer(&'a Map<String, Value>),
    /// Anything else (manifests, indexes, `repositories`): searched as
    /// bytes.
    Other,
}

impl<'a> Json<'a> {
    /// Recognises `value` by its content, not its file's name: OCI layouts
    /// name every blob by digest.
    pub fn of(value: &'a Value) -> Json<'a> {
        match value {
            Value::Object(map) if map.contains_key("rootfs") => Json::Image(map),
            Value::Object(map)
                if map.contains_key("id")
                    && (map.contains_key("config") || map.contains_key("container_config")) =>
            {
                Json::LegacyLayer(map)
            }
            _ => Json::Other,
        }
    }
}

/// Every form in an image config or a legacy layer's copy, by field;
/// `history` entries are numbered as `docker history` lists them (0 is the
/// newest).
pub fn findings(matcher: &Matcher, map: &Map<String, Value>) -> Vec<(&'static str, Location)> {
    let mut out = Vec::new();
    for (key, value) in map {
        match (key.as_str(), value) {
            ("history", Value::Array(entries)) => {
                for (i, entry) in entries.iter().enumerate() {
                    let index = entries.len() - 1 - i;
                    strings(entry, String::new(), &mut |field, text| {
                        for (form, _, _) in matcher.find_all(text.as_bytes()) {
                            out.push((
                                form,
                                Location::History {
                                    index,
                                    field: matcher.redact(&field),
                                },
                            ));
                        }
                    });
                }
            }
            _ => {
                let mut found = |field: String, text: &str| {
                    for (form, _, _) in matcher.find_all(text.as_bytes()) {
                        out.push((
                            form,
                            Location::Config {
                                field: matcher.redact(&field),
                            },
                        ));
                    }
                };
                found(format!("{key} (key)"), key);
                strings(value, key.clone(), &mut found);
            }
        }
    }
    out
}

/// Calls `f` with each string in `v` and its path (`config.Env[1]`); keys
/// are content too (Labels, ExposedPorts), named `path.key (key)`.
fn strings(v: &Value, path: String, f: &mut dyn FnMut(String, &str)) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match v {
        Value::String(s) => f(path, s),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, format!("{path}[{i}]"), f);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                f(format!("{} (key)", join(k)), k);
                strings(item, join(k), f);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "fake pass:@/%+ word";

    fn found(json: &str) -> Vec<String> {
        let m = Matcher::new("ci-user", PW);
        let value: Value = serde_json::from_str(json).unwrap();
        let map = match Json::of(&value) {
            Json::Image(map) | Json::LegacyLayer(map) => map,
            Json::Other => panic!("not a config: {json}"),
        };
        findings(&m, map)
            .into_iter()
            .map(|(form, loc)| format!("{form} {loc}"))
            .collect()
    }

    #[test]
    fn config_fields_and_history_entries_are_named_as_docker_shows_them() {
        let pw = serde_json::to_string(PW).unwrap();
        let image = format!(
            r#"{{"rootfs":{{"type":"layers","diff_ids":[]}},
                "config":{{"Env":["PATH=/bin","X={}"],"Labels":{{{pw}:"v"}}}},
                "history":[{{"created_by":"RUN a"}},{{"created_by":"RUN b {}","empty_layer":true}},{{"comment":"c"}}]}}"#,
            &pw[1..pw.len() - 1],
            &pw[1..pw.len() - 1],
        );
        assert_eq!(
            found(&image),
            [
                "password config config.Env[1]",
                "password config config.Labels.[REDACTED] (key)",
                "password history #1 created_by",
            ]
        );
    }

    #[test]
    fn a_legacy_layer_copy_is_read_as_a_config_and_other_json_is_not() {
        let legacy = format!(r#"{{"id":"ab","container_config":{{"Cmd":["{PW}"]}}}}"#);
        assert_eq!(found(&legacy), ["password config container_config.Cmd[0]"]);
        for other in [r#"[{"Config":"x"}]"#, r#"{"schemaVersion":2}"#, "not json"] {
            assert!(
                matches!(
                    Json::of(&serde_json::from_str(other).unwrap_or(Value::Null)),
                    Json::Other
                ),
                "{other}"
            );
        }
    }
}
