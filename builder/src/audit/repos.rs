//! Which repository files the finished image holds that still name the
//! proxy. A build points apt and dnf at the proxy and Kolla's footer puts
//! the original files back; a file it missed makes every image built FROM
//! this one fetch through a proxy that is not there. Layers are applied in
//! the manifest's order with their deletions (`.wh.NAME`) and opaque
//! directories (`.wh..wh..opq`), which hide what lower layers wrote.

use super::unpack::RepoEvent;
use std::collections::BTreeMap;

/// A repository file of the finished image that names the proxy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProxyLeft {
    /// The export entry of the layer that wrote it (a digest once named).
    pub layer: String,
    /// Its path in the image.
    pub path: String,
    /// Byte offset of the proxy's URL in it.
    pub offset: u64,
}

/// The files naming the proxy in each image whose layers, lowest first,
/// are `orders`; without any order (no manifest found), the layers are
/// taken in the order met.
pub fn proxy_left(events: &[RepoEvent], orders: &[Vec<String>]) -> Vec<ProxyLeft> {
    let mut met: Vec<String> = Vec::new();
    for e in events {
        if !met.contains(entry(e)) {
            met.push(entry(e).clone());
        }
    }
    let met = [met];
    let orders = if orders.is_empty() { &met[..] } else { orders };
    let mut out: Vec<ProxyLeft> = Vec::new();
    for order in orders {
        for left in finished(events, order) {
            if !out.contains(&left) {
                out.push(left);
            }
        }
    }
    out
}

fn entry(e: &RepoEvent) -> &String {
    match e {
        RepoEvent::File { entry, .. }
        | RepoEvent::Delete { entry, .. }
        | RepoEvent::Opaque { entry, .. } => entry,
    }
}

/// One image: path -> (layer, where it names the proxy), layer by layer.
fn finished(events: &[RepoEvent], order: &[String]) -> Vec<ProxyLeft> {
    let mut files: BTreeMap<&str, (&str, Option<u64>)> = BTreeMap::new();
    for layer in order {
        for e in events.iter().filter(|e| entry(e) == layer) {
            let gone = match e {
                RepoEvent::File { path, proxy_at, .. } => {
                    files.insert(path, (layer, *proxy_at));
                    continue;
                }
                RepoEvent::Delete { path, .. } => lower(&files, layer, |p| {
                    p == path
                        || p.strip_prefix(path.as_str())
                            .is_some_and(|rest| rest.starts_with('/'))
                }),
                RepoEvent::Opaque { dir, .. } => {
                    lower(&files, layer, |p| p.starts_with(dir.as_str()))
                }
            };
            for path in gone {
                files.remove(path);
            }
        }
    }
    files
        .into_iter()
        .filter_map(|(path, (layer, at))| {
            Some(ProxyLeft {
                layer: layer.to_string(),
                path: path.to_string(),
                offset: at?,
            })
        })
        .collect()
}

/// The paths `hidden` matches that layers below `layer` wrote: a layer's
/// deletions hide lower layers only, whatever their place among its own
/// entries.
fn lower<'a>(
    files: &BTreeMap<&'a str, (&'a str, Option<u64>)>,
    layer: &str,
    hidden: impl Fn(&str) -> bool,
) -> Vec<&'a str> {
    files
        .iter()
        .filter(|(path, (from, _))| *from != layer && hidden(path))
        .map(|(path, _)| *path)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(entry: &str, path: &str, names_proxy: bool) -> RepoEvent {
        RepoEvent::File {
            entry: entry.into(),
            path: path.into(),
            proxy_at: names_proxy.then_some(7),
        }
    }

    fn left(events: &[RepoEvent], order: &[&str]) -> Vec<String> {
        let order: Vec<String> = order.iter().map(|s| s.to_string()).collect();
        proxy_left(events, &[order])
            .into_iter()
            .map(|l| format!("{} {}", l.layer, l.path))
            .collect()
    }

    #[test]
    fn only_what_the_finished_image_holds_is_reported() {
        let events = [
            file("l1", "etc/yum.repos.d/pulp.repo", true),
            file("l1", "etc/yum.repos.d/kept.repo", true),
            file("l1", "etc/apt/sources.list.d/a.sources", true),
            file("l1", "opt/copy/sources.list", true),
            // The restore: deleted, replaced, a directory made opaque.
            RepoEvent::Delete {
                entry: "l2".into(),
                path: "etc/yum.repos.d/pulp.repo".into(),
            },
            file("l2", "etc/apt/sources.list.d/b.sources", false),
            RepoEvent::Opaque {
                entry: "l2".into(),
                dir: "etc/apt/sources.list.d/".into(),
            },
            RepoEvent::Delete {
                entry: "l2".into(),
                path: "opt/copy".into(),
            },
        ];
        assert_eq!(
            left(&events, &["l1", "l2"]),
            ["l1 etc/yum.repos.d/kept.repo"]
        );
        // A file rewritten in a higher layer is judged by that layer.
        let events = [
            file("l1", "etc/yum.repos.d/pulp.repo", false),
            file("l2", "etc/yum.repos.d/pulp.repo", true),
        ];
        assert_eq!(
            left(&events, &["l1", "l2"]),
            ["l2 etc/yum.repos.d/pulp.repo"]
        );
        assert!(
            left(&events, &["l2", "l1"]).is_empty(),
            "order is the manifest's"
        );
    }

    #[test]
    fn without_a_manifest_layers_are_taken_as_met() {
        let events = [
            file("b", "etc/yum.repos.d/pulp.repo", true),
            RepoEvent::Delete {
                entry: "a".into(),
                path: "etc/yum.repos.d/pulp.repo".into(),
            },
        ];
        assert_eq!(proxy_left(&events, &[]).len(), 0);
    }
}
