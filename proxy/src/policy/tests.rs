use super::*;

fn allowed() -> Vec<PathPrefix> {
    ["/pulp/content/", "/pulp/api/v3/status/"]
        .iter()
        .map(|p| PathPrefix::parse(p).unwrap())
        .collect()
}

fn req(method: &str, target: &str) -> request::Parts {
    let (parts, ()) = http::Request::builder()
        .method(method)
        .uri(target)
        .header("host", "proxy")
        .body(())
        .unwrap()
        .into_parts();
    parts
}

#[test]
fn normalisation_table() {
    let cases = [
        ("/", Ok("/")),
        ("/a/b", Ok("/a/b")),
        ("/a/b/", Ok("/a/b/")),
        ("//a///b", Ok("/a/b")),
        ("/a/./b", Ok("/a/b")),
        ("/a/b/..", Ok("/a/")),
        ("/a/b/../c", Ok("/a/c")),
        ("/a/.", Ok("/a/")),
        ("/%7Euser/%41b", Ok("/~user/Ab")),
        ("/a%20b/c%2Bd", Ok("/a%20b/c%2Bd")),
        ("/..", Err("`..` above the root")),
        ("/a/../..", Err("`..` above the root")),
        ("/a%2Fb", Err("percent-encoded slash")),
        ("/a%2fb", Err("percent-encoded slash")),
        ("/a%5Cb", Err("percent-encoded backslash")),
        ("/a\\b", Err("contains a backslash")),
        ("/%2e%2e/x", Err("percent-encoded dot segment")),
        ("/.%2E/x", Err("percent-encoded dot segment")),
        ("/%2e/x", Err("percent-encoded dot segment")),
        ("/a%zz", Err("invalid percent escape")),
        ("/a%4", Err("truncated percent escape")),
        ("/a%00b", Err("percent-encoded control character")),
    ];
    for (input, want) in cases {
        assert_eq!(
            normalise_path(input).as_deref().map_err(|e| *e),
            want,
            "{input}"
        );
    }
}

#[test]
fn allowed_paths_decide_after_normalisation() {
    let a = allowed();
    let ok = check(&req("GET", "/pulp/content/x/../y.rpm?a=%2F&b"), &a, 8192).unwrap();
    assert_eq!(ok.path_and_query(), "/pulp/content/y.rpm?a=%2F&b");
    assert_eq!(
        check(&req("GET", "/pulp/api/v3/status/"), &a, 8192)
            .unwrap()
            .path,
        "/pulp/api/v3/status/"
    );
    for target in [
        "/pulp/content/../api/v3/users/",
        "/pulp/api/v3/tasks/",
        "/pulp/contentX/a",
        "/",
    ] {
        assert_eq!(
            check(&req("GET", target), &a, 8192),
            Err(Refusal::PathNotAllowed),
            "{target}"
        );
    }
}

#[test]
fn methods_and_forms() {
    let a = allowed();
    assert!(check(&req("HEAD", "/pulp/content/a"), &a, 8192).is_ok());
    for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"] {
        assert_eq!(
            check(&req(m, "/pulp/content/a"), &a, 8192),
            Err(Refusal::Method),
            "{m}"
        );
    }
    assert_eq!(
        check(&req("GET", "http://evil.example/pulp/content/a"), &a, 8192),
        Err(Refusal::TargetForm)
    );
    assert_eq!(
        check(&req("CONNECT", "evil.example:443"), &a, 8192),
        Err(Refusal::TargetForm)
    );
}

#[test]
fn host_and_body_rules() {
    let a = allowed();
    let mut two = req("GET", "/pulp/content/a");
    two.headers.append("host", "other".parse().unwrap());
    assert_eq!(check(&two, &a, 8192), Err(Refusal::Host("more than one")));
    let mut none = req("GET", "/pulp/content/a");
    none.headers.remove("host");
    assert_eq!(check(&none, &a, 8192), Err(Refusal::Host("missing")));
    none.version = Version::HTTP_10;
    assert!(check(&none, &a, 8192).is_ok());
    let mut body = req("GET", "/pulp/content/a");
    body.headers.insert("content-length", "5".parse().unwrap());
    assert_eq!(check(&body, &a, 8192), Err(Refusal::Body));
    let mut zero = req("GET", "/pulp/content/a");
    zero.headers.insert("content-length", "0".parse().unwrap());
    assert!(check(&zero, &a, 8192).is_ok());
    let mut te = req("GET", "/pulp/content/a");
    te.headers
        .insert("transfer-encoding", "chunked".parse().unwrap());
    assert_eq!(check(&te, &a, 8192), Err(Refusal::Body));
}

#[test]
fn long_targets_are_refused() {
    let a = allowed();
    let long = format!("/pulp/content/{}", "a".repeat(100));
    assert!(check(&req("GET", &long), &a, 114).is_ok());
    assert_eq!(check(&req("GET", &long), &a, 113), Err(Refusal::UriTooLong));
    let with_query = format!("{long}?q");
    assert_eq!(
        check(&req("GET", &with_query), &a, 115),
        Err(Refusal::UriTooLong)
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Segments chosen to stress the normaliser: dot segments plain and
    /// encoded, encoded separators, empty segments, the prefix's own names.
    fn segment() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "pulp", "content", "api", "v3", "status", "users", "a", ".", "..", "", "%2e", "%2E%2e",
            ".%2e", "%2f", "%2F", "%5c", "%41", "%7e", "%25", "%252e", "%20", "x%2Fy", "%", "%zz",
            "\\", "..;", "~",
        ])
    }

    /// Mostly starts inside an allowed prefix, so that many paths are
    /// accepted and the escape attempts come from inside.
    fn path() -> impl Strategy<Value = String> {
        let start = prop::sample::select(vec!["", "/pulp/content", "/pulp/api/v3/status", "/pulp"]);
        (
            start,
            prop::collection::vec(segment(), 0..10),
            any::<bool>(),
        )
            .prop_map(|(start, segs, slash)| {
                let mut p = format!("{start}/{}", segs.join("/"));
                if slash {
                    p.push('/');
                }
                p
            })
    }

    /// No accepted path, re-parsed by a strict URL parser, lands outside
    /// the allowed prefixes; and normalising is idempotent. The run fails
    /// too if it accepts too few paths to prove anything.
    #[test]
    fn accepted_paths_stay_inside() {
        use proptest::test_runner::{Config, TestRunner};
        let cases = 4096;
        let accepted = std::cell::Cell::new(0u32);
        let mut runner = TestRunner::new(Config::with_cases(cases));
        runner
            .run(&path(), |raw| {
                let Ok(target) = raw.parse::<http::Uri>() else {
                    return Ok(());
                };
                if let Ok(decision) = check(&req("GET", &target.to_string()), &allowed(), 8192) {
                    accepted.set(accepted.get() + 1);
                    let url =
                        url::Url::parse(&format!("http://upstream.test{}", decision.path)).unwrap();
                    let resolved = url.path();
                    prop_assert!(
                        allowed().iter().any(|p| p.matches(resolved)),
                        "{raw} -> {} -> {resolved}",
                        decision.path
                    );
                    prop_assert_eq!(
                        resolved,
                        decision.path.as_str(),
                        "the parser sees another path"
                    );
                    prop_assert_eq!(
                        normalise_path(&decision.path).unwrap(),
                        decision.path.clone()
                    );
                    let lower = decision.path.to_ascii_lowercase();
                    prop_assert!(
                        !lower.contains("%2f") && !lower.contains("%5c") && !lower.contains("%2e")
                    );
                }
                Ok(())
            })
            .unwrap();
        // Measured: about one in eight generated paths is accepted.
        assert!(
            accepted.get() >= cases / 20,
            "only {} of {cases} generated paths were accepted; the generator no longer reaches the allowed prefixes",
            accepted.get()
        );
    }
}
