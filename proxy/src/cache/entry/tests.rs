use super::*;

fn meta() -> Meta {
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-rpm"),
    );
    h.insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Basic eA=="),
    );
    Meta::new(
        "ci-user https://u/p/x.rpm".into(),
        Freshness::Immutable,
        5,
        &h,
    )
}

#[test]
fn head_round_trips_and_keeps_only_representation_headers() {
    let m = meta();
    let bytes = m.encode();
    let (back, len) = Meta::decode(&bytes).unwrap();
    assert_eq!(len as usize, bytes.len());
    assert_eq!(back.key, m.key);
    assert_eq!(back.freshness, Freshness::Immutable);
    assert_eq!(back.body_len, 5);
    assert_eq!(back.stored_at, m.stored_at);
    assert!(back.age() < 60);
    assert_eq!(back.headers.len(), 2);
    assert!(back.headers.get(header::SET_COOKIE).is_none());
    assert!(back.headers.get(header::AUTHORIZATION).is_none());
    assert!(back.upstream.is_empty());

    // Through a redirect: the upstream's validators beside the storage's.
    let mut m = meta();
    m.upstream
        .insert(header::ETAG, HeaderValue::from_static("\"sha256\""));
    let bytes = m.encode();
    let (back, len) = Meta::decode(&bytes).unwrap();
    assert_eq!(len as usize, bytes.len());
    assert_eq!(back.upstream[header::ETAG], "\"sha256\"");
    assert_eq!(back.headers[header::ETAG], "\"v1\"");
}

#[test]
fn damaged_heads_are_refused_not_trusted() {
    let bytes = meta().encode();
    for cut in 0..bytes.len() {
        assert!(Meta::decode(&bytes[..cut]).is_none(), "cut at {cut}");
    }
    let mut bad = bytes.clone();
    bad[0] ^= 1;
    assert!(Meta::decode(&bad).is_none());
    // A declared length that disagrees with the content.
    for delta in [-1i64, 1] {
        let mut bad = bytes.clone();
        let len = (bytes.len() as i64 + delta) as u32;
        bad[8..12].copy_from_slice(&len.to_be_bytes());
        bad.push(0);
        assert!(Meta::decode(&bad).is_none(), "delta {delta}");
    }
}

#[test]
fn long_heads_are_read_in_full() {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&"x".repeat(6000)).unwrap(),
    );
    let m = Meta::new("k".into(), Freshness::Revalidate, 3, &h);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e");
    let mut data = m.encode();
    assert!(data.len() > FIRST_READ);
    data.extend_from_slice(b"abc");
    std::fs::write(&path, &data).unwrap();
    let e = Entry::open(&path, Some("k")).unwrap();
    assert_eq!(e.meta.headers[header::CONTENT_DISPOSITION].len(), 6000);
    assert_eq!(&e.read(0, 10).unwrap()[..], b"abc");
}

#[test]
fn open_checks_size_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e");
    let mut data = meta().encode();
    data.extend_from_slice(b"hello");
    std::fs::write(&path, &data).unwrap();
    let e = Entry::open(&path, Some("ci-user https://u/p/x.rpm")).unwrap();
    assert_eq!(&e.read(1, 64).unwrap()[..], b"ello");
    assert!(Entry::open(&path, Some("ci-user https://u/p/y.rpm")).is_err());
    std::fs::write(&path, &data[..data.len() - 1]).unwrap();
    assert!(Entry::open(&path, None).is_err());
}

#[test]
fn ranges() {
    let v = |s: &'static str| Some(HeaderValue::from_static(s));
    assert_eq!(range(None, 10), Ranged::Whole);
    assert_eq!(range(v("bytes=0-4").as_ref(), 10), Ranged::Part(0, 4));
    assert_eq!(range(v("bytes=5-").as_ref(), 10), Ranged::Part(5, 9));
    assert_eq!(range(v("bytes=5-100").as_ref(), 10), Ranged::Part(5, 9));
    assert_eq!(range(v("bytes=-3").as_ref(), 10), Ranged::Part(7, 9));
    assert_eq!(range(v("bytes=-30").as_ref(), 10), Ranged::Part(0, 9));
    assert_eq!(range(v("bytes=10-").as_ref(), 10), Ranged::Unsatisfiable);
    assert_eq!(range(v("bytes=-0").as_ref(), 10), Ranged::Unsatisfiable);
    assert_eq!(range(v("bytes=0-").as_ref(), 0), Ranged::Unsatisfiable);
    assert_eq!(
        range(v("bytes=99999999999999999999999-").as_ref(), 10),
        Ranged::Unsatisfiable
    );
    assert_eq!(range(v("bytes=0-1,4-5").as_ref(), 10), Ranged::Whole);
    assert_eq!(range(v("bytes=4-1").as_ref(), 10), Ranged::Whole);
    assert_eq!(range(v("items=0-1").as_ref(), 10), Ranged::Whole);
    assert_eq!(range(v("bytes=a-b").as_ref(), 10), Ranged::Whole);
}

#[test]
fn client_conditionals_against_the_stored_response() {
    let stored = meta().headers;
    let mut stored_lm = stored.clone();
    stored_lm.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
    );
    let req = |pairs: &[(HeaderName, &'static str)]| {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(n.clone(), HeaderValue::from_static(v));
        }
        h
    };
    assert!(not_modified(
        &req(&[(header::IF_NONE_MATCH, "\"x\", W/\"v1\"")]),
        &stored
    ));
    assert!(not_modified(&req(&[(header::IF_NONE_MATCH, "*")]), &stored));
    assert!(!not_modified(
        &req(&[(header::IF_NONE_MATCH, "\"v2\"")]),
        &stored
    ));
    let later = (header::IF_MODIFIED_SINCE, "Mon, 07 Nov 1994 08:49:37 GMT");
    let earlier = (header::IF_MODIFIED_SINCE, "Sat, 05 Nov 1994 08:49:37 GMT");
    assert!(not_modified(&req(std::slice::from_ref(&later)), &stored_lm));
    assert!(!not_modified(
        &req(std::slice::from_ref(&earlier)),
        &stored_lm
    ));
    assert!(!not_modified(&req(std::slice::from_ref(&later)), &stored));
    // If-None-Match decides when both are sent.
    assert!(!not_modified(
        &req(&[(header::IF_NONE_MATCH, "\"v2\""), later]),
        &stored_lm
    ));
    assert!(!not_modified(&req(&[]), &stored_lm));
}
