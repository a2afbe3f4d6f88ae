//! The span document to the trace's storage: `GET
//! /api/2.0/mlflow/traces/{id}/credentials-for-data-upload` hands out a
//! signed URL and the headers that must go with it; the document is `PUT`
//! there with exactly those headers and **no** `Authorization` (the
//! workspace token must never reach the storage provider). A signed URL
//! that expired or was refused (403) is fetched again once.
//!
//! AWS presigned and GCP signed URLs take one `PUT`, which is what the
//! client does for them. Azure (`AZURE_SAS_URI`, `AZURE_ADLS_GEN2_SAS_URI`)
//! needs the block / ADLS protocol and is not implemented yet: such a trace
//! is refused for good (dead-lettered, so it can be replayed).

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use serde::Deserialize;

use super::experiment::{answered, failed};
use super::workspace::Workspace;
use crate::sinks::http::{call, percent_encode};
use crate::sinks::{classify, Attempt};

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

/// Uploads `doc` (the span document's bytes) for trace `id`.
pub async fn upload(ws: &Workspace, id: &str, doc: Bytes) -> Attempt {
    for attempt in 0..2 {
        let cred = match credentials(ws, id).await {
            Ok(c) => c,
            Err(a) => return a,
        };
        if !matches!(cred.kind.as_str(), "AWS_PRESIGNED_URL" | "GCP_SIGNED_URL") {
            return Attempt::permanent(format!(
                "uploading the span document: signed URL type {} is not supported yet",
                cred.kind
            ));
        }
        let answer = match put(ws, &cred, doc.clone()).await {
            Ok(a) => a,
            Err(e) => return Attempt::transient(format!("uploading the span document: {e}")),
        };
        if answer.status.is_success() {
            return Attempt::ok();
        }
        if answer.status == StatusCode::FORBIDDEN && attempt == 0 {
            tracing::info!(trace_id = %id, "signed upload URL refused (403); fetching a new one");
            continue;
        }
        let status = answer.status.as_u16();
        let verdict = classify(status, answer.retry_after.as_deref());
        return Attempt::from_answer(verdict, status, &answer.body, "uploading the span document");
    }
    Attempt::transient("uploading the span document: the signed URL was refused twice")
}

async fn credentials(ws: &Workspace, id: &str) -> Result<CredentialInfo, Attempt> {
    let path = format!(
        "/api/2.0/mlflow/traces/{}/credentials-for-data-upload",
        percent_encode(id)
    );
    let a = ws.call(Method::GET, &path, None).await.map_err(failed)?;
    if !a.status.is_success() {
        return Err(answered(&a, "getting the upload URL"));
    }
    parse_credentials(&a.body).map_err(Attempt::transient)
}

/// The `PUT` itself: the returned headers, nothing of ours but the length.
async fn put(
    ws: &Workspace,
    cred: &CredentialInfo,
    doc: Bytes,
) -> Result<crate::sinks::http::Answer, String> {
    let req = signed_put(cred, doc)?;
    call(&ws.client, req, ws.timeout).await
}

/// Builds the signed `PUT` (pure, for tests): exactly the credential's
/// headers; an `Authorization` among them is refused, never sent.
pub fn signed_put(cred: &CredentialInfo, doc: Bytes) -> Result<Request<Full<Bytes>>, String> {
    let mut req = Request::builder()
        .method(Method::PUT)
        .uri(cred.signed_uri.as_str());
    for h in &cred.headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("the upload URL came with a bad header name {:?}", h.name))?;
        if name == header::AUTHORIZATION {
            return Err("the upload URL came with an Authorization header; not sent".into());
        }
        let value = HeaderValue::from_str(&h.value)
            .map_err(|_| format!("the upload URL came with a bad value for {name}"))?;
        req = req.header(name, value);
    }
    req.header(header::CONTENT_LENGTH, doc.len())
        .body(Full::new(doc))
        .map_err(|_| "the upload URL is not a valid URL".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred() -> CredentialInfo {
        parse_credentials(
            br#"{"credential_info":{"signed_uri":"https://bucket.s3.amazonaws.com/t/traces.json?X-Amz-Signature=abc","type":"AWS_PRESIGNED_URL","headers":[{"name":"x-amz-server-side-encryption","value":"AES256"}]}}"#,
        )
        .unwrap()
    }

    #[test]
    fn the_put_carries_exactly_the_returned_headers() {
        let req = signed_put(&cred(), Bytes::from_static(b"{\"spans\": []}")).unwrap();
        assert_eq!(req.method(), Method::PUT);
        assert_eq!(
            req.uri().to_string(),
            "https://bucket.s3.amazonaws.com/t/traces.json?X-Amz-Signature=abc"
        );
        let names: Vec<_> = req.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-amz-server-side-encryption", "content-length"]);
        assert!(req.headers().get(header::AUTHORIZATION).is_none());
    }

    #[test]
    fn an_authorization_header_from_the_server_is_never_sent() {
        let mut c = cred();
        c.headers.push(HttpHeader {
            name: "Authorization".into(),
            value: "Bearer x".into(),
        });
        assert!(signed_put(&c, Bytes::new()).is_err());
    }

    #[test]
    fn a_reply_without_credential_info_is_an_error() {
        assert!(parse_credentials(b"{}").is_err());
        assert!(parse_credentials(b"<html>").is_err());
    }
}
