//! Calls to the Databricks workspace REST API, as the MLflow client makes
//! them (tests/fixtures/databricks/*.json): `Authorization` from the
//! workspace [`Credentials`], `x-databricks-org-id` when the workspace
//! announces its id, `X-MLflow-Client-Version`. A 401 means the token went
//! stale (expired, revoked): that token is dropped and the call is made once
//! more with a fresh one. Every call has the export time limit.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;

use crate::databricks::{AuthError, Credentials};
use crate::sinks::http::{call, Answer, HttpClient};

/// The MLflow client version whose wire format this sink speaks.
pub const MLFLOW_CLIENT_VERSION: &str = "3.17.2";

/// The workspace API, authorized.
#[derive(Clone)]
pub struct Workspace {
    pub client: HttpClient,
    /// Host, token (cached, refreshed) and workspace id.
    pub creds: Credentials,
    pub timeout: Duration,
}

/// Why a workspace call got no answer: a transport failure, or no token.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// No answer within the time limit, connection refused, ...
    Transport(String),
    /// The credentials could not produce a token (the OIDC endpoint refused
    /// the client secret, or did not answer).
    Auth(AuthError),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Transport(e) => f.write_str(e),
            CallError::Auth(e) => write!(f, "workspace credentials: {e}"),
        }
    }
}

impl Workspace {
    /// `method path` with a JSON body (or none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, CallError> {
        let ct = body.map(|_| "application/json");
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        self.send(method, path, ct, &[], body).await
    }

    /// One authorized request (any body and headers); after a 401 the token
    /// it carried is dropped and the request is made once more.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, CallError> {
        let req = Req {
            method: &method,
            path,
            content_type,
            headers,
        };
        let (first, sent) = self.send_once(&req, body.clone()).await?;
        if first.status != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        tracing::info!(
            path,
            "the workspace refused the token (401); fetching a new one"
        );
        self.creds.invalidate_token(&sent);
        Ok(self.send_once(&req, body).await?.0)
    }

    async fn send_once(
        &self,
        r: &Req<'_>,
        body: Bytes,
    ) -> Result<(Answer, HeaderValue), CallError> {
        let auth = self.creds.authorization().await.map_err(CallError::Auth)?;
        let mut req = Request::builder()
            .method(r.method.clone())
            .uri(format!("{}{}", self.creds.host(), r.path))
            .header(header::AUTHORIZATION, auth.clone())
            .header(header::USER_AGENT, user_agent())
            .header("X-MLflow-Client-Version", MLFLOW_CLIENT_VERSION);
        if let Some(id) = self.creds.org_id().await {
            req = req.header("x-databricks-org-id", id);
        }
        if let Some(ct) = r.content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        for (k, v) in r.headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| CallError::Transport(format!("building request: {e}")))?;
        let answer = call(&self.client, req, self.timeout)
            .await
            .map_err(CallError::Transport)?;
        Ok((answer, auth))
    }
}

/// What a request is, besides its body.
struct Req<'a> {
    method: &'a Method,
    path: &'a str,
    content_type: Option<&'a str>,
    headers: &'a [(&'a str, &'a str)],
}

/// `llmtap/<version>`.
pub fn user_agent() -> String {
    format!("llmtap/{}", env!("CARGO_PKG_VERSION"))
}
