use super::*;

fn cred(kind: &str, headers: &[(&str, &str)]) -> CredentialInfo {
    CredentialInfo {
        signed_uri: "https://acct.blob.core.windows.net/c/tr-1/traces.json?sv=2023&sig=a%2Bb"
            .into(),
        kind: kind.into(),
        headers: headers
            .iter()
            .map(|(n, v)| HttpHeader {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
    }
}

fn names(r: &Request<Full<Bytes>>) -> Vec<&str> {
    r.headers().keys().map(|k| k.as_str()).collect()
}

#[test]
fn aws_and_gcp_are_one_put_with_every_returned_header() {
    for kind in ["AWS_PRESIGNED_URL", "GCP_SIGNED_URL"] {
        let c = cred(kind, &[("x-amz-server-side-encryption", "AES256")]);
        let p = plan(&c, &Bytes::from_static(b"{}")).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].method(), Method::PUT);
        assert_eq!(p[0].uri().to_string(), c.signed_uri);
        assert_eq!(
            names(&p[0]),
            ["x-amz-server-side-encryption", "content-length"]
        );
    }
}

#[test]
fn azure_blob_is_blocks_then_the_block_list() {
    let c = cred(
        "AZURE_SAS_URI",
        &[
            ("x-ms-encryption-scope", "s"),
            ("x-ms-meta-a", "1"),
            ("x-ms-blob-content-type", "j"),
        ],
    );
    let doc = Bytes::from(vec![b'x'; CHUNK + 5]);
    let p = plan(&c, &doc).unwrap();
    assert_eq!(p.len(), 3, "two blocks and the list");
    for block in &p[..2] {
        let q = block.uri().query().unwrap();
        assert!(
            q.starts_with("sv=2023&sig=a%2Bb&comp=block&blockid="),
            "{q}"
        );
        assert_eq!(block.headers()["x-ms-blob-type"], "BlockBlob");
        assert_eq!(
            names(block),
            ["x-ms-blob-type", "x-ms-encryption-scope", "content-length"]
        );
    }
    let list = &p[2];
    assert!(list.uri().query().unwrap().ends_with("&comp=blocklist"));
    assert_eq!(
        names(list),
        [
            "x-ms-encryption-scope",
            "x-ms-meta-a",
            "x-ms-blob-content-type",
            "content-length"
        ]
    );
}

#[test]
fn azure_adls_is_create_append_flush() {
    let c = cred(
        "AZURE_ADLS_GEN2_SAS_URI",
        &[("x-ms-umask", "0022"), ("x-ms-version", "1")],
    );
    let p = plan(&c, &Bytes::from_static(b"{\"spans\": []}")).unwrap();
    let steps: Vec<_> = p
        .iter()
        .map(|r| format!("{} {}", r.method(), r.uri().query().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            "PUT sv=2023&sig=a%2Bb&resource=file",
            "PATCH sv=2023&sig=a%2Bb&action=append&position=0&flush=true",
        ]
    );
    // x-ms-umask is a create header, not a patch one.
    assert_eq!(
        names(&p[0]),
        ["x-ms-umask", "x-ms-version", "content-length"]
    );
    assert_eq!(names(&p[1]), ["x-ms-version", "content-length"]);

    let big = Bytes::from(vec![b'x'; 2 * CHUNK]);
    let p = plan(&c, &big).unwrap();
    let last = p.last().unwrap();
    assert_eq!(p.len(), 4);
    assert!(last
        .uri()
        .query()
        .unwrap()
        .ends_with(&format!("action=flush&position={}", 2 * CHUNK)));
}

#[test]
fn no_authorization_ever_and_unknown_types_refused() {
    let c = cred("AWS_PRESIGNED_URL", &[("Authorization", "Bearer x")]);
    assert!(plan(&c, &Bytes::new()).is_err());
    assert!(plan(&cred("SOMETHING_NEW", &[]), &Bytes::new()).is_err());
}
