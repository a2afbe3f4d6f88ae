//! The requests that put a span document at a signed storage URL, per
//! credential type, as the MLflow client makes them
//! (`store/artifact/databricks_artifact_repo.py::upload_trace_data`,
//! `azure/client.py`), as a plan of requests sent in order — pure, so each
//! protocol is tested without a cloud:
//!
//! - `AWS_PRESIGNED_URL`, `GCP_SIGNED_URL`: one `PUT` with the returned headers.
//! - `AZURE_SAS_URI`: `PUT ?comp=block&blockid=..` per 10 MiB block (with
//!   `x-ms-blob-type: BlockBlob`), then `PUT ?comp=blocklist` with the
//!   block list XML.
//! - `AZURE_ADLS_GEN2_SAS_URI`: `PUT ?resource=file`, `PATCH
//!   ?action=append&position=..` per 10 MiB (`&flush=true` on a single
//!   chunk), then `PATCH ?action=flush&position=<size>` for several.
//!
//! Each Azure operation gets only the returned headers that operation
//! accepts (the client's `_is_valid_*_header` lists; compared without case).
//! None of them ever carries an `Authorization` the workspace did not sign
//! for: an `Authorization` among the returned headers is refused.

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request};
use http_body_util::Full;
use serde::Deserialize;

use crate::sinks::http::percent_encode;

/// `credential_info` of GetCredentialsForTraceDataUpload.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CredentialInfo {
    pub signed_uri: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub headers: Vec<HttpHeader>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct HttpHeader {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Deserialize)]
struct CredentialsReply {
    credential_info: CredentialInfo,
}

/// Parses the credentials reply.
pub fn parse_credentials(body: &[u8]) -> Result<CredentialInfo, String> {
    serde_json::from_slice::<CredentialsReply>(body)
        .map(|r| r.credential_info)
        .map_err(|e| format!("credentials-for-data-upload: unexpected answer: {e}"))
}

/// `MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE`'s default.
pub const CHUNK: usize = 10 * 1024 * 1024;

const PUT_BLOCK: &[&str] = &[
    "x-ms-date",
    "x-ms-version",
    "content-md5",
    "x-ms-content-crc64",
    "x-ms-encryption-scope",
    "x-ms-lease-id",
    "x-ms-client-request-id",
    "x-ms-encryption-key",
    "x-ms-encryption-key-sha256",
    "x-ms-encryption-algorithm",
];
const PUT_BLOCK_LIST: &[&str] = &[
    "date",
    "x-ms-date",
    "x-ms-version",
    "content-md5",
    "x-ms-content-crc64",
    "x-ms-blob-cache-control",
    "x-ms-blob-content-type",
    "x-ms-blob-content-encoding",
    "x-ms-blob-content-language",
    "x-ms-blob-content-md5",
    "x-ms-encryption-scope",
    "x-ms-tags",
    "x-ms-lease-id",
    "x-ms-client-request-id",
    "x-ms-blob-content-disposition",
    "x-ms-access-tier",
    "if-modified-since",
    "if-unmodified-since",
    "if-match",
    "if-none-match",
];
const ADLS_PUT: &[&str] = &[
    "cache-control",
    "content-encoding",
    "content-language",
    "content-disposition",
    "x-ms-cache-control",
    "x-ms-content-type",
    "x-ms-content-encoding",
    "x-ms-content-language",
    "x-ms-content-disposition",
    "x-ms-rename-source",
    "x-ms-lease-id",
    "x-ms-properties",
    "x-ms-permissions",
    "x-ms-umask",
    "x-ms-owner",
    "x-ms-group",
    "x-ms-acl",
    "x-ms-proposed-lease-id",
    "x-ms-expiry-option",
    "x-ms-expiry-time",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "x-ms-source-if-match",
    "x-ms-source-if-none-match",
    "x-ms-source-if-modified-since",
    "x-ms-source-if-unmodified-since",
    "x-ms-encryption-key",
    "x-ms-encryption-key-sha256",
    "x-ms-encryption-algorithm",
    "x-ms-encryption-context",
    "x-ms-client-request-id",
    "x-ms-date",
    "x-ms-version",
];
const ADLS_PATCH: &[&str] = &[
    "content-md5",
    "x-ms-lease-id",
    "x-ms-cache-control",
    "x-ms-content-type",
    "x-ms-content-disposition",
    "x-ms-content-encoding",
    "x-ms-content-language",
    "x-ms-content-md5",
    "x-ms-properties",
    "x-ms-owner",
    "x-ms-group",
    "x-ms-permissions",
    "x-ms-acl",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "x-ms-encryption-key",
    "x-ms-encryption-key-sha256",
    "x-ms-encryption-algorithm",
    "x-ms-encryption-context",
    "x-ms-client-request-id",
    "x-ms-date",
    "x-ms-version",
];

/// Which returned headers an operation takes.
#[derive(Clone, Copy)]
enum Keep {
    All,
    Only(&'static [&'static str]),
    OnlyOrMeta(&'static [&'static str]),
}

/// The requests that store `doc` at the credential's URL, in order.
pub fn plan(cred: &CredentialInfo, doc: &Bytes) -> Result<Vec<Request<Full<Bytes>>>, String> {
    match cred.kind.as_str() {
        "AWS_PRESIGNED_URL" | "GCP_SIGNED_URL" => Ok(vec![request(
            cred,
            Method::PUT,
            "",
            Keep::All,
            &[],
            doc.clone(),
        )?]),
        "AZURE_SAS_URI" => azure_blob(cred, doc),
        "AZURE_ADLS_GEN2_SAS_URI" => azure_adls(cred, doc),
        other => Err(format!("signed URL type {other:?} is not supported")),
    }
}

fn chunks(doc: &Bytes) -> Vec<Bytes> {
    if doc.is_empty() {
        return vec![Bytes::new()];
    }
    (0..doc.len())
        .step_by(CHUNK)
        .map(|i| doc.slice(i..(i + CHUNK).min(doc.len())))
        .collect()
}

fn azure_blob(cred: &CredentialInfo, doc: &Bytes) -> Result<Vec<Request<Full<Bytes>>>, String> {
    let mut out = Vec::new();
    let mut ids = Vec::new();
    for chunk in chunks(doc) {
        // base64 of 32 hex digits, as the client's uuid4().hex.
        let hex = format!("{:032x}", fastrand::u128(..));
        let id = base64::engine::general_purpose::STANDARD.encode(hex);
        let query = format!("comp=block&blockid={}", percent_encode(&id));
        let extra = [("x-ms-blob-type", "BlockBlob")];
        out.push(request(
            cred,
            Method::PUT,
            &query,
            Keep::Only(PUT_BLOCK),
            &extra,
            chunk,
        )?);
        ids.push(id);
    }
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<BlockList>\n");
    for id in &ids {
        xml.push_str(&format!("<Uncommitted>{id}</Uncommitted>\n"));
    }
    xml.push_str("</BlockList>");
    let keep = Keep::OnlyOrMeta(PUT_BLOCK_LIST);
    out.push(request(
        cred,
        Method::PUT,
        "comp=blocklist",
        keep,
        &[],
        Bytes::from(xml),
    )?);
    Ok(out)
}

fn azure_adls(cred: &CredentialInfo, doc: &Bytes) -> Result<Vec<Request<Full<Bytes>>>, String> {
    let put = Keep::Only(ADLS_PUT);
    let mut out = vec![request(
        cred,
        Method::PUT,
        "resource=file",
        put,
        &[],
        Bytes::new(),
    )?];
    let parts = chunks(doc);
    let single = parts.len() == 1;
    let mut position = 0;
    for chunk in parts {
        let flush = if single { "&flush=true" } else { "" };
        let query = format!("action=append&position={position}{flush}");
        position += chunk.len();
        out.push(request(
            cred,
            Method::PATCH,
            &query,
            Keep::Only(ADLS_PATCH),
            &[],
            chunk,
        )?);
    }
    if !single {
        let query = format!("action=flush&position={position}");
        out.push(request(
            cred,
            Method::PATCH,
            &query,
            put,
            &[],
            Bytes::new(),
        )?);
    }
    Ok(out)
}

/// One request to the signed URL with `query` appended and the kept headers.
fn request(
    cred: &CredentialInfo,
    method: Method,
    query: &str,
    keep: Keep,
    extra: &[(&str, &str)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let uri = match (query.is_empty(), cred.signed_uri.contains('?')) {
        (true, _) => cred.signed_uri.clone(),
        (false, true) => format!("{}&{query}", cred.signed_uri),
        (false, false) => format!("{}?{query}", cred.signed_uri),
    };
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    for h in &cred.headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("the upload URL came with a bad header name {:?}", h.name))?;
        if name == header::AUTHORIZATION {
            return Err("the upload URL came with an Authorization header; not sent".into());
        }
        let kept = match keep {
            Keep::All => true,
            Keep::Only(list) => list.contains(&name.as_str()),
            Keep::OnlyOrMeta(list) => {
                list.contains(&name.as_str()) || name.as_str().starts_with("x-ms-meta-")
            }
        };
        if kept {
            let value = HeaderValue::from_str(&h.value)
                .map_err(|_| format!("the upload URL came with a bad value for {name}"))?;
            req = req.header(name, value);
        }
    }
    req.header(header::CONTENT_LENGTH, body.len())
        .body(Full::new(body))
        .map_err(|_| "the upload URL is not a valid URL".to_string())
}

#[cfg(test)]
mod tests;
