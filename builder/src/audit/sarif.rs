//! The audit as SARIF 2.1.0, the log format CI systems read findings from:
//! one run, one rule per kind of finding, one result per finding (errors)
//! and per repository file left naming the proxy (warnings). An image is
//! no source tree, so a result's place is a logical location
//! `IMAGE/CHANNEL/...` (config field, history entry, layer and path) and,
//! for a file in a layer, also the file as a relative URI with its byte
//! offset. What a bound kept from being searched is a tool notification,
//! so a log with no results is not mistaken for a clean image. Nothing
//! here sees the secret: locations come redacted.

use super::{Finding, ImageReport, Location};
use serde_json::{json, Value};

/// A rule: its ID, short name, and what it means.
struct Rule {
    id: &'static str,
    name: &'static str,
    text: &'static str,
    level: &'static str,
}

const RULES: [Rule; 7] = [
    Rule {
        id: "credential-password",
        name: "PasswordInImage",
        text: "The Pulp password, as it is or JSON-escaped, is in the image.",
        level: "error",
    },
    Rule {
        id: "credential-user-password",
        name: "UserPasswordPairInImage",
        text: "The Pulp `user:password` pair is in the image.",
        level: "error",
    },
    Rule {
        id: "credential-base64",
        name: "Base64CredentialInImage",
        text: "The Pulp password or `user:password` pair, base64 or base64url encoded \
               (as in an Authorization: Basic header), is in the image.",
        level: "error",
    },
    Rule {
        id: "credential-url-encoded",
        name: "UrlEncodedCredentialInImage",
        text: "The Pulp password, percent- or form-encoded or as URL userinfo \
               (`user:password@`), is in the image.",
        level: "error",
    },
    Rule {
        id: "storage-signature",
        name: "StorageSignatureInImage",
        text: "A presigned object-storage URL's signature or access key is in the image.",
        level: "error",
    },
    Rule {
        id: "proxy-url-in-repository-file",
        name: "ProxyUrlInRepositoryFile",
        text: "A repository file of the finished image still names the build proxy; \
               images built from this one would fetch through a proxy that is not there.",
        level: "warning",
    },
    Rule {
        id: "search-incomplete",
        name: "FileNotSearchedThrough",
        text: "A bound (nesting depth, decompressed size, compression ratio) kept a file \
               from being searched through; it was searched as stored, and the image is \
               not shown clean.",
        level: "warning",
    },
];

/// The rule a finding falls under (an index into [`RULES`]).
fn rule_of(f: &Finding) -> usize {
    if f.class == pulp_auth_config::signatures::CLASS {
        4
    } else if f.form.starts_with("base64") {
        2
    } else if f.form.contains("encoded") || f.form.contains("userinfo") {
        3
    } else if f.form == "user:password" {
        1
    } else {
        0
    }
}

const PROXY_RULE: usize = 5;
const INCOMPLETE_RULE: usize = 6;

/// The SARIF log of an audit.
pub fn log(reports: &[ImageReport]) -> Value {
    let mut results = Vec::new();
    let mut notifications = Vec::new();
    for r in reports {
        for f in &r.findings {
            results.push(finding(r, f));
        }
        for w in &r.warnings {
            results.push(result(
                PROXY_RULE,
                format!(
                    "{}: /{} (layer {}) still names the proxy",
                    r.image,
                    w.path.trim_start_matches('/'),
                    w.layer
                ),
                layer_location(r, &w.layer, &w.path, Some(w.offset)),
            ));
        }
        // A result, not only a notification: code-scanning views show
        // results, and an image with none would look clean.
        for i in &r.incomplete {
            results.push(result(
                INCOMPLETE_RULE,
                format!(
                    "{}: not searched through: layer {} /{}: {}",
                    r.image,
                    i.entry,
                    i.path.trim_start_matches('/'),
                    i.reason
                ),
                // From its start: the whole file went unsearched.
                layer_location(r, &i.entry, &i.path, Some(0)),
            ));
        }
        for n in &r.notes {
            notifications.push(json!({
                "level": "note",
                "message": { "text": format!("{}: {n}", r.image) },
            }));
        }
    }
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.name,
                "shortDescription": { "text": r.text },
                "fullDescription": { "text": r.text },
                "help": { "text": "See `ci-builder audit` in docs/builder.md: \
                    where the form was found, and how a build leaks it." },
                "defaultConfiguration": { "level": r.level },
            })
        })
        .collect();
    let images: Vec<Value> = reports
        .iter()
        .map(|r| json!({ "image": r.image, "id": r.id, "verdict": r.verdict }))
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "ci-builder",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            } },
            "invocations": [{
                "executionSuccessful": true,
                "toolExecutionNotifications": notifications,
            }],
            "results": results,
            "properties": { "images": images },
        }],
    })
}

/// A result of rule `index` at `location`.
fn result(index: usize, text: String, location: Value) -> Value {
    let rule = &RULES[index];
    json!({
        "ruleId": rule.id,
        "ruleIndex": index,
        "level": rule.level,
        "message": { "text": text },
        "locations": [location],
    })
}

fn finding(r: &ImageReport, f: &Finding) -> Value {
    let location = match &f.location {
        Location::Layer {
            layer,
            path,
            offset,
            ..
        } => layer_location(r, layer, path, *offset),
        Location::Config { field } => logical(r, "config", field, "property"),
        Location::History { index, field } => {
            logical(r, "history", &format!("{index}.{field}"), "element")
        }
        Location::Export { entry, .. } => logical(r, "export", entry, "resource"),
    };
    let mut out = result(
        rule_of(f),
        format!("{}: {} in {}", r.image, f.form, f.location),
        location,
    );
    out["properties"] = json!({ "form": f.form, "copies": f.copies });
    out
}

fn logical(r: &ImageReport, channel: &str, name: &str, kind: &str) -> Value {
    json!({ "logicalLocations": [{
        "name": name,
        "fullyQualifiedName": format!("{}/{channel}/{name}", r.image),
        "kind": kind,
    }] })
}

fn layer_location(r: &ImageReport, layer: &str, path: &str, offset: Option<u64>) -> Value {
    let path = path.trim_start_matches('/');
    let mut physical = json!({ "artifactLocation": { "uri": uri_path(path) } });
    if let Some(o) = offset {
        physical["region"] = json!({ "byteOffset": o });
    }
    json!({
        "physicalLocation": physical,
        "logicalLocations": [{
            "name": path,
            "fullyQualifiedName": format!("{}/{layer}/{path}", r.image),
            "kind": "resource",
        }],
    })
}

/// A relative URI reference for a path in the image: every byte but the
/// unreserved ones and `/` percent-encoded.
fn uri_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_falls_under_its_rule() {
        let rule = |form: &'static str| {
            RULES[rule_of(&Finding::new(form, Location::Config { field: "x".into() }))].id
        };
        for (form, id) in [
            ("password", "credential-password"),
            ("JSON-escaped password", "credential-password"),
            ("user:password", "credential-user-password"),
            ("base64(user:password)", "credential-base64"),
            ("base64url(password)", "credential-base64"),
            ("percent-encoded password", "credential-url-encoded"),
            ("form-encoded password", "credential-url-encoded"),
            ("URL userinfo", "credential-url-encoded"),
        ] {
            assert_eq!(rule(form), id, "{form}");
        }
        for form in pulp_auth_config::signatures::FORMS {
            assert_eq!(rule(form), "storage-signature", "{form}");
        }
    }

    #[test]
    fn paths_become_relative_uri_references() {
        assert_eq!(
            uri_path("etc/a b/[REDACTED]%.conf"),
            "etc/a%20b/%5BREDACTED%5D%25.conf"
        );
    }
}
