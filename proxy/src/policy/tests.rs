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
    let ok = check(&req("GET", "/pulp/content/x/../y.rpm?a=%2F&b"), &a).unwrap();
    assert_eq!(ok.path_and_query(), "/pulp/content/y.rpm?a=%2F&b");
    assert_eq!(
        check(&req("GET", "/pulp/api/v3/status/"), &a).unwrap().path,
        "/pulp/api/v3/status/"
    );
    for target in [
        "/pulp/content/../api/v3/users/",
        "/pulp/api/v3/tasks/",
        "/pulp/contentX/a",
        "/",
    ] {
        assert_eq!(
            check(&req("GET", target), &a),
            Err(Refusal::PathNotAllowed),
            "{target}"
        );
    }
}

#[test]
fn methods_and_forms() {
    let a = allowed();
    assert!(check(&req("HEAD", "/pulp/content/a"), &a).is_ok());
    for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"] {
        assert_eq!(
            check(&req(m, "/pulp/content/a"), &a),
            Err(Refusal::Method),
            "{m}"
        );
    }
    assert_eq!(
        check(&req("GET", "http://evil.example/pulp/content/a"), &a),
        Err(Refusal::TargetForm)
    );
    assert_eq!(
        check(&req("CONNECT", "evil.example:443"), &a),
        Err(Refusal::TargetForm)
    );
}

#[test]
fn host_and_body_rules() {
    let a = allowed();
    let mut two = req("GET", "/pulp/content/a");
    two.headers.append("host", "other".parse().unwrap());
    assert_eq!(check(&two, &a), Err(Refusal::Host("more than one")));
    let mut none = req("GET", "/pulp/content/a");
    none.headers.remove("host");
    assert_eq!(check(&none, &a), Err(Refusal::Host("missing")));
    none.version = Version::HTTP_10;
    assert!(check(&none, &a).is_ok());
    let mut body = req("GET", "/pulp/content/a");
    body.headers.insert("content-length", "5".parse().unwrap());
    assert_eq!(check(&body, &a), Err(Refusal::Body));
    let mut zero = req("GET", "/pulp/content/a");
    zero.headers.insert("content-length", "0".parse().unwrap());
    assert!(check(&zero, &a).is_ok());
    let mut te = req("GET", "/pulp/content/a");
    te.headers
        .insert("transfer-encoding", "chunked".parse().unwrap());
    assert_eq!(check(&te, &a), Err(Refusal::Body));
}
