//! Calls to the Databricks workspace REST API, as the MLflow client makes
//! them (tests/fixtures/databricks/*.json): `Authorization` from the
//! workspace credentials, `x-databricks-org-id` when the workspace id is
//! known, `X-MLflow-Client-Version`; JSON bodies. A 401 means the token went
//! stale (expired, revoked): the credentials are invalidated and the call is
//! made once more with a fresh token. Every call has the export time limit.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;

use crate::sinks::http::{call, Answer, HttpClient};
use crate::sinks::SinkFuture;

/// The MLflow client version whose wire format this sink speaks.
pub const MLFLOW_CLIENT_VERSION: &str = "3.17.2";

/// What the sink needs from the workspace credentials
/// ([`crate::databricks::Credentials`] implements it).
pub trait Authorizer: Send + Sync {
    /// The workspace URL, `https://...` (or `http://` on loopback), no
    /// trailing slash.
    fn host(&self) -> String;
    /// The `Authorization` value for the next call (a cached token, or a
    /// fresh one). The error never carries a secret.
    fn authorization(&self) -> SinkFuture<'_, Result<HeaderValue, String>>;
    /// Forget the cached token: the workspace refused it.
    fn invalidate(&self);
    /// The workspace id (`x-databricks-org-id`), when known.
    fn workspace_id(&self) -> Option<String> {
        None
    }
}

/// The workspace API, authorized.
#[derive(Clone)]
pub struct Workspace {
    pub client: HttpClient,
    pub auth: Arc<dyn Authorizer>,
    pub timeout: Duration,
}

/// Why a workspace call got no answer: a transport failure, or no token.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// No answer within the time limit, connection refused, ...
    Transport(String),
    /// The credentials could not produce a token (e.g. the OIDC endpoint
    /// refused the client secret).
    Auth(String),
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
    /// `method path` with a JSON body (or none); retried once after a 401.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, CallError> {
        let body = body.map(|b| Bytes::from(b.to_string()));
        let first = self.call_once(&method, path, body.clone()).await?;
        if first.status != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        tracing::info!(
            path,
            "the workspace refused the token (401); fetching a new one"
        );
        self.auth.invalidate();
        self.call_once(&method, path, body).await
    }

    async fn call_once(
        &self,
        method: &Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Answer, CallError> {
        let auth = self.auth.authorization().await.map_err(CallError::Auth)?;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.auth.host()))
            .header(header::AUTHORIZATION, auth)
            .header("X-MLflow-Client-Version", MLFLOW_CLIENT_VERSION)
            .header(header::USER_AGENT, user_agent());
        if let Some(id) = self.auth.workspace_id() {
            req = req.header("x-databricks-org-id", id);
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| CallError::Transport(format!("building request: {e}")))?;
        call(&self.client, req, self.timeout)
            .await
            .map_err(CallError::Transport)
    }
}

/// `llmtap/<version>`.
pub fn user_agent() -> String {
    format!("llmtap/{}", env!("CARGO_PKG_VERSION"))
}
