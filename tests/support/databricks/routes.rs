//! The stand-in's request handling: record the request, apply faults, check
//! auth, dispatch to the endpoint, record the answer.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use prost::Message;
use serde_json::{json, Value};

use super::validate::{self, Reject};
use super::{Inner, OtlpRow, Rejection, Seen, Shared, StoredTrace};
use super::{CLIENT_ID, CLIENT_SECRET, PAT, UPLOAD_HEADER, WORKSPACE_ID};

/// Largest request body accepted (bigger ones get 413).
const MAX_BODY: usize = 64 << 20;

/// An answer before it becomes a hyper response (kept so rejections can
/// record their message).
struct Resp {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

impl Resp {
    fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Resp {
        Resp {
            status,
            headers: vec![("content-type", content_type.to_string())],
            body: body.into(),
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut b = Response::builder()
            .status(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
        for (k, v) in self.headers {
            b = b.header(k, v);
        }
        b.body(Full::new(self.body)).expect("stand-in response")
    }
}

/// What one request is, once read.
struct Req {
    method: String,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
    /// `http://host:port` as the client addressed us.
    base: String,
}

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(413, "RESOURCE_EXHAUSTED", "request body too large").into_response()
        }
    };
    let latency = shared.lock().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    // HTTP/1.1 names the host in `Host`, HTTP/2 in the URI's authority.
    let host = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| shared.addr.to_string());
    let r = Req {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        base: format!("http://{host}"),
        headers: parts.headers,
        body,
    };
    let mut g = shared.lock();
    let resp = route(&mut g, &r);
    let status = resp.status;
    if status >= 400 {
        let message = String::from_utf8_lossy(&resp.body).into_owned();
        g.rejections.push(Rejection {
            method: r.method.clone(),
            path: r.path.clone(),
            status,
            message,
        });
    }
    g.seen.push(Seen {
        authorized: r.headers.contains_key(http::header::AUTHORIZATION),
        method: r.method,
        path: r.path,
        query: r.query,
        headers: r.headers,
        body: r.body,
        status,
    });
    resp.into_response()
}

fn route(g: &mut Inner, r: &Req) -> Resp {
    if g.outage {
        return with_retry_after(
            error(
                503,
                "TEMPORARILY_UNAVAILABLE",
                "The service is temporarily unavailable",
            ),
            1,
        );
    }
    if let Some(resp) = injected_fault(g, &r.path) {
        return resp;
    }
    match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/.well-known/databricks-config") => json_ok(&json!({
            "oidc_endpoint": format!("{}/oidc", r.base),
            "workspace_id": WORKSPACE_ID,
        })),
        ("GET", "/oidc/.well-known/oauth-authorization-server") => json_ok(&json!({
            "issuer": format!("{}/oidc", r.base),
            "authorization_endpoint": format!("{}/oidc/v1/authorize", r.base),
            "token_endpoint": format!("{}/oidc/v1/token", r.base),
        })),
        ("POST", "/oidc/v1/token") => token(g, r),
        (_, p) if p.starts_with("/signed/") => signed_put(g, r),
        (_, p) if p.starts_with("/api/") => api(g, r),
        _ => error(
            404,
            "ENDPOINT_NOT_FOUND",
            &format!("No API found for '{} {}'", r.method, r.path),
        ),
    }
}

fn injected_fault(g: &mut Inner, path: &str) -> Option<Resp> {
    let f = g
        .faults
        .iter_mut()
        .find(|(p, _, n)| *n > 0 && path.starts_with(p.as_str()))?;
    f.2 -= 1;
    let status = f.1;
    g.faults.retain(|(_, _, n)| *n > 0);
    let code = match status {
        429 => "REQUEST_LIMIT_EXCEEDED",
        500 => "INTERNAL_ERROR",
        503 => "TEMPORARILY_UNAVAILABLE",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        _ => "INJECTED_FAULT",
    };
    let resp = error(status, code, "injected fault");
    Some(if matches!(status, 429 | 503) {
        with_retry_after(resp, 1)
    } else {
        resp
    })
}

// ---- OAuth ----------------------------------------------------------------

/// `POST /oidc/v1/token`: client credentials with HTTP Basic client auth.
fn token(g: &mut Inner, r: &Req) -> Resp {
    let oauth_err = |status: u16, err: &str, desc: &str| {
        json_resp(status, &json!({"error": err, "error_description": desc}))
    };
    let basic = r
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if basic.as_deref() != Some(&format!("{CLIENT_ID}:{CLIENT_SECRET}")) {
        return oauth_err(401, "invalid_client", "Client authentication failed");
    }
    let ct = r
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return oauth_err(
            400,
            "invalid_request",
            "Content-Type must be application/x-www-form-urlencoded",
        );
    }
    let form = form_pairs(&r.body);
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("grant_type") != Some("client_credentials") {
        return oauth_err(
            400,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    if !get("scope")
        .unwrap_or("")
        .split(' ')
        .any(|s| s == "all-apis")
    {
        return oauth_err(400, "invalid_scope", "scope must include all-apis");
    }
    let lifetime = g.token_lifetime;
    let token = format!("standin-oauth-{}-{:016x}", g.next_id, fastrand::u64(..));
    g.next_id += 1;
    g.tokens.insert(token.clone(), Instant::now() + lifetime);
    g.grants += 1;
    json_ok(&json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "scope": "all-apis",
    }))
}

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    let dec = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (dec(k), dec(v))
        })
        .collect()
}

// ---- REST API ---------------------------------------------------------------

fn api(g: &mut Inner, r: &Req) -> Resp {
    if let Err(resp) = check_bearer(g, &r.headers) {
        return resp;
    }
    // The MLflow client never compresses request bodies; what Databricks
    // would do with one is unknown, so the stand-in refuses it.
    if r.headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| v != "identity")
    {
        return error(
            400,
            "INVALID_PARAMETER_VALUE",
            "Content-Encoding is not accepted (the MLflow client sends uncompressed bodies)",
        );
    }
    if let Some(org) = r.headers.get("x-databricks-org-id") {
        if org.as_bytes() != WORKSPACE_ID.as_bytes() {
            return error(
                403,
                "PERMISSION_DENIED",
                "x-databricks-org-id does not name this workspace",
            );
        }
    }
    if let Some((n, secs)) = g.throttle {
        if n > 0 {
            g.throttle = Some((n - 1, secs));
            let resp = error(
                429,
                "REQUEST_LIMIT_EXCEEDED",
                "Too many requests. Please wait and retry.",
            );
            return with_retry_after(resp, secs);
        }
        g.throttle = None;
    }
    let segs: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    match (r.method.as_str(), segs.as_slice()) {
        ("GET", ["api", "2.0", "mlflow", "experiments", "get"]) => {
            experiment_get(g, &r.query, "experiment_id")
        }
        ("GET", ["api", "2.0", "mlflow", "experiments", "get-by-name"]) => {
            experiment_get(g, &r.query, "experiment_name")
        }
        ("POST", ["api", "2.0", "mlflow", "experiments", "create"]) => {
            experiment_create(g, &r.body)
        }
        ("POST", ["api", "3.0", "mlflow", "traces"]) => {
            rate_limited(g).unwrap_or_else(|| start_trace(g, r))
        }
        ("GET", ["api", "2.0", "mlflow", "traces", id, "credentials-for-data-upload"]) => {
            upload_credentials(g, r, id)
        }
        ("POST", ["api", "3.0", "mlflow", "traces", id, "assessments"]) => {
            create_assessment(g, &r.body, id)
        }
        ("POST", ["api", "2.0", "otel", "v1", "traces"]) => otlp(g, r),
        ("POST", ["api", "4.0", "mlflow", "traces", loc, hex, "info"]) => {
            rate_limited(g).unwrap_or_else(|| v4_info(g, &r.body, loc, hex))
        }
        _ => error(
            404,
            "ENDPOINT_NOT_FOUND",
            &format!("No API found for '{} {}'", r.method, r.path),
        ),
    }
}

fn check_bearer(g: &Inner, headers: &HeaderMap) -> Result<(), Resp> {
    let unauth = |m: &str| Err(error(401, "UNAUTHENTICATED", m));
    let Some(h) = headers.get(http::header::AUTHORIZATION) else {
        return unauth("Credential was not sent or was of an unsupported type for this API.");
    };
    let Some(tok) = h.to_str().ok().and_then(|h| h.strip_prefix("Bearer ")) else {
        return unauth("Credential was not sent or was of an unsupported type for this API.");
    };
    if tok == PAT {
        return Ok(());
    }
    match g.tokens.get(tok) {
        Some(exp) if *exp > Instant::now() => Ok(()),
        Some(_) => unauth("Token expired."),
        None => unauth("Invalid access token."),
    }
}

/// Trace creation over its QPS quota -> 429.
fn rate_limited(g: &mut Inner) -> Option<Resp> {
    let qps = g.rate_qps?;
    let now = Instant::now();
    g.recent_creations
        .retain(|t| now.duration_since(*t) < Duration::from_secs(1));
    if g.recent_creations.len() >= qps as usize {
        let resp = error(
            429,
            "REQUEST_LIMIT_EXCEEDED",
            "Trace creation rate limit exceeded.",
        );
        return Some(with_retry_after(resp, 1));
    }
    g.recent_creations.push(now);
    None
}

fn query_param(query: &str, key: &str) -> Option<String> {
    form_pairs(query.as_bytes())
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn experiment_json(e: &super::Experiment) -> Value {
    json!({
        "experiment_id": e.id,
        "name": e.name,
        "artifact_location": format!("dbfs:/databricks/mlflow-tracking/{}", e.id),
        "lifecycle_stage": "active",
        "tags": [],
    })
}

fn experiment_get(g: &Inner, query: &str, key: &str) -> Resp {
    let Some(want) = query_param(query, key) else {
        return error(
            400,
            "INVALID_PARAMETER_VALUE",
            &format!("Missing value for required parameter '{key}'"),
        );
    };
    let found = g.experiments.iter().find(|e| {
        if key == "experiment_id" {
            e.id == want
        } else {
            e.name == want
        }
    });
    match found {
        Some(e) => json_ok(&json!({"experiment": experiment_json(e)})),
        None => error(
            404,
            "RESOURCE_DOES_NOT_EXIST",
            &format!("Node '{want}' does not exist."),
        ),
    }
}

fn experiment_create(g: &mut Inner, body: &[u8]) -> Resp {
    let name = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("name").and_then(Value::as_str).map(String::from));
    let Some(name) = name else {
        return error(
            400,
            "INVALID_PARAMETER_VALUE",
            "Missing value for required parameter 'name'",
        );
    };
    if !name.starts_with('/') {
        let msg = format!(
            "Got an invalid experiment name '{name}'. An experiment name must be an absolute path within the Databricks workspace, e.g. '/Users/<some-username>/my-experiment'."
        );
        return error(400, "INVALID_PARAMETER_VALUE", &msg);
    }
    if g.experiments.iter().any(|e| e.name == name) {
        return error(
            400,
            "RESOURCE_ALREADY_EXISTS",
            &format!("Node named '{name}' already exists"),
        );
    }
    let id = format!("{}", 4_000_000_000u64 + g.next_id);
    g.next_id += 1;
    g.experiments.push(super::Experiment {
        id: id.clone(),
        name,
    });
    json_ok(&json!({"experiment_id": id}))
}

fn reject(r: Reject) -> Resp {
    error(r.status, r.code, &r.message)
}

fn start_trace(g: &mut Inner, r: &Req) -> Resp {
    let info = match validate::start_trace(&r.body, |id| g.experiments.iter().any(|e| e.id == id)) {
        Ok(i) => i,
        Err(e) => return reject(e),
    };
    let id = info["trace_id"].as_str().unwrap_or_default().to_string();
    let exp = info["trace_location"]["mlflow_experiment"]["experiment_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let t = g.traces.entry(id.clone()).or_insert_with(|| StoredTrace {
        trace_id: id.clone(),
        info: Value::Null,
        spans: None,
        starts: 0,
        uploads: 0,
    });
    t.info = info.clone();
    t.starts += 1;
    let mut reply = info;
    let loc = format!("dbfs:/databricks/mlflow-tracking/{exp}/{id}/artifacts");
    if !reply.get("tags").is_some_and(Value::is_object) {
        reply["tags"] = json!({});
    }
    reply["tags"]["mlflow.artifactLocation"] = Value::String(loc);
    json_ok(&json!({"trace": {"trace_info": reply}}))
}

fn signature(g: &Inner, trace_id: &str, expires: u64) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (g.sign_key, trace_id, expires).hash(&mut h);
    format!("{:016x}", h.finish())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn upload_credentials(g: &Inner, r: &Req, id: &str) -> Resp {
    if !g.traces.contains_key(id) {
        return error(
            404,
            "RESOURCE_DOES_NOT_EXIST",
            &format!("Trace with ID {id} not found."),
        );
    }
    let expires = unix_now() + g.upload_ttl.as_secs();
    let sig = signature(g, id, expires);
    json_ok(&json!({"credential_info": {
        "request_id": id,
        "path": "traces.json",
        "signed_uri": format!("{}/signed/{id}/traces.json?X-Amz-Expires={expires}&X-Amz-Signature={sig}", r.base),
        "type": "AWS_PRESIGNED_URL",
        "headers": [{"name": UPLOAD_HEADER.0, "value": UPLOAD_HEADER.1}],
    }}))
}

/// S3-style XML error, as a presigned-URL PUT gets it.
fn s3_error(status: u16, code: &str, message: &str) -> Resp {
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>");
    Resp::new(status, "application/xml", body)
}

/// `PUT /signed/{tr-id}/traces.json?X-Amz-Expires=..&X-Amz-Signature=..`.
fn signed_put(g: &mut Inner, r: &Req) -> Resp {
    let segs: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let ["signed", id, "traces.json"] = segs.as_slice() else {
        return s3_error(404, "NoSuchKey", "The specified key does not exist.");
    };
    if r.method != "PUT" {
        return s3_error(
            405,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
        );
    }
    if r.headers.contains_key(http::header::AUTHORIZATION) {
        return s3_error(400, "InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified");
    }
    let expires = query_param(&r.query, "X-Amz-Expires").and_then(|e| e.parse::<u64>().ok());
    let sig = query_param(&r.query, "X-Amz-Signature");
    let (Some(expires), Some(sig)) = (expires, sig) else {
        return s3_error(
            403,
            "AccessDenied",
            "Query-string authentication requires the Signature and Expires parameters",
        );
    };
    if sig != signature(g, id, expires) {
        return s3_error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    if unix_now() >= expires {
        return s3_error(403, "AccessDenied", "Request has expired");
    }
    if r.headers.get(UPLOAD_HEADER.0).map(|v| v.as_bytes()) != Some(UPLOAD_HEADER.1.as_bytes()) {
        return s3_error(403, "SignatureDoesNotMatch", "There were headers present in the request which were not signed: x-amz-server-side-encryption is missing or differs");
    }
    let doc = match validate::span_document(&r.body, id) {
        Ok(d) => d,
        Err(e) => return s3_error(400, "InvalidSpanDocument", &e),
    };
    let Some(t) = g.traces.get_mut(*id) else {
        return s3_error(404, "NoSuchKey", "The specified key does not exist.");
    };
    t.spans = Some(doc);
    t.uploads += 1;
    let mut ok = Resp::new(200, "application/xml", Bytes::new());
    ok.headers.push(("etag", "\"standin\"".into()));
    ok
}

fn create_assessment(g: &mut Inner, body: &[u8], id: &str) -> Resp {
    if !g.traces.contains_key(id) {
        return error(
            404,
            "RESOURCE_DOES_NOT_EXIST",
            &format!("Trace with ID {id} not found."),
        );
    }
    let mut a = match validate::assessment(body, id) {
        Ok(a) => a,
        Err(e) => return reject(e),
    };
    a["assessment_id"] = Value::String(format!("a-{:032x}", fastrand::u128(..)));
    g.assessments.push(a.clone());
    json_ok(&json!({"assessment": a}))
}

fn otlp(g: &mut Inner, r: &Req) -> Resp {
    let Some(table) = r
        .headers
        .get("x-databricks-uc-table-name")
        .and_then(|h| h.to_str().ok())
    else {
        return error(
            400,
            "INVALID_PARAMETER_VALUE",
            "Missing required header X-Databricks-UC-Table-Name",
        );
    };
    if !validate::is_uc_table_name(table) {
        return error(
            400,
            "INVALID_PARAMETER_VALUE",
            "X-Databricks-UC-Table-Name must be catalog.schema.table",
        );
    }
    let ct = r
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if ct != "application/x-protobuf" {
        return error(
            415,
            "INVALID_PARAMETER_VALUE",
            "Content-Type must be application/x-protobuf",
        );
    }
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let Ok(req) = ExportTraceServiceRequest::decode(r.body.as_ref()) else {
        return error(
            400,
            "INVALID_PARAMETER_VALUE",
            "body is not an OTLP ExportTraceServiceRequest",
        );
    };
    for rs in req.resource_spans {
        for ss in rs.scope_spans {
            for span in ss.spans {
                if span.trace_id.len() != 16 || span.span_id.len() != 8 {
                    return error(
                        400,
                        "INVALID_PARAMETER_VALUE",
                        "span ids must be 16 and 8 bytes",
                    );
                }
                g.otlp.push(OtlpRow {
                    table: table.to_string(),
                    span,
                    resource: rs.resource.clone(),
                });
            }
        }
    }
    Resp::new(200, "application/x-protobuf", Bytes::new())
}

fn v4_info(g: &mut Inner, body: &[u8], loc: &str, hex: &str) -> Resp {
    match validate::v4_info(body, loc, hex) {
        Ok(v) => {
            g.v4_infos.push(v.clone());
            json_ok(&v)
        }
        Err(e) => reject(e),
    }
}

// ---- responses ---------------------------------------------------------------

fn json_resp(status: u16, v: &Value) -> Resp {
    Resp::new(status, "application/json", v.to_string())
}

fn json_ok(v: &Value) -> Resp {
    json_resp(200, v)
}

/// A Databricks REST error: `{"error_code": ..., "message": ...}`.
fn error(status: u16, code: &str, message: &str) -> Resp {
    json_resp(status, &json!({"error_code": code, "message": message}))
}

fn with_retry_after(mut resp: Resp, secs: u64) -> Resp {
    resp.headers.push(("retry-after", secs.to_string()));
    resp
}
