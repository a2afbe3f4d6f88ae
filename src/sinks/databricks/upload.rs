//! The span document to the trace's storage: `GET
//! /api/2.0/mlflow/traces/{id}/credentials-for-data-upload` hands out a
//! signed URL and the headers that must go with it; the document is stored
//! there ([`super::signed`]: one `PUT` on AWS and GCP, the block / ADLS
//! protocol on Azure) with exactly those headers and **no**
//! `Authorization` (the workspace token must never reach the storage
//! provider). A signed URL that expired or was refused (401/403) is fetched
//! again once, as the client does.

use bytes::Bytes;
use http::{Method, StatusCode};

use super::experiment::{answered, failed};
use super::signed::{parse_credentials, CredentialInfo};
use super::workspace::Workspace;
use crate::sinks::http::{call, percent_encode};
use crate::sinks::{classify, Attempt};
#[cfg(test)]
use http::header;

/// Uploads `doc` (the span document's bytes) for trace `id`.
pub async fn upload(ws: &Workspace, id: &str, doc: Bytes) -> Attempt {
    for attempt in 0..2 {
        let cred = match credentials(ws, id).await {
            Ok(c) => c,
            Err(a) => return a,
        };
        let plan = match super::signed::plan(&cred, &doc) {
            Ok(p) => p,
            Err(e) => return Attempt::permanent(format!("uploading the span document: {e}")),
        };
        let mut refused = None;
        for req in plan {
            let answer = match call(&ws.client, req, ws.timeout).await {
                Ok(a) => a,
                Err(e) => return Attempt::transient(format!("uploading the span document: {e}")),
            };
            if !answer.status.is_success() {
                refused = Some(answer);
                break;
            }
        }
        let Some(answer) = refused else {
            return Attempt::ok();
        };
        let expired = matches!(
            answer.status,
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED
        );
        if expired && attempt == 0 {
            tracing::info!(trace_id = %id, "signed upload URL refused; fetching a new one");
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
    fn the_reply_parses_into_the_signed_put() {
        let p =
            crate::sinks::databricks::signed::plan(&cred(), &Bytes::from_static(b"{}")).unwrap();
        assert_eq!(
            p[0].uri().to_string(),
            "https://bucket.s3.amazonaws.com/t/traces.json?X-Amz-Signature=abc"
        );
        assert_eq!(p[0].headers()["x-amz-server-side-encryption"], "AES256");
        assert!(p[0].headers().get(header::AUTHORIZATION).is_none());
    }

    #[test]
    fn a_reply_without_credential_info_is_an_error() {
        assert!(parse_credentials(b"{}").is_err());
        assert!(parse_credentials(b"<html>").is_err());
    }
}
