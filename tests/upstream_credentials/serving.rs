//! `databricks`: a PAT or an OAuth token reaches a model serving endpoint on
//! its workspace; the token is cached, and refreshed after a 401.

use super::*;

/// A Databricks workspace serving a model: the workspace stand-in (host
/// metadata, OIDC, token grants and expiry, bearer rules) behind a front on
/// its own port that also answers `POST /serving-endpoints/{name}/invocations`
/// as model serving does — with the stand-in's own verdict on the bearer
/// token (an authenticated call to its API with the same header).
struct Workspace {
    dbx: databricks::Databricks,
    addr: std::net::SocketAddr,
    /// The `Authorization` of each serving call, and the status answered.
    served: std::sync::Arc<std::sync::Mutex<Vec<(String, u16)>>>,
}

impl Workspace {
    async fn start() -> Workspace {
        let dbx = databricks::Databricks::start().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (behind, log) = (dbx.host(), served.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (behind, log) = (behind.clone(), log.clone());
                let svc =
                    hyper::service::service_fn(move |req| front(req, behind.clone(), log.clone()));
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
                );
            }
        });
        Workspace { dbx, addr, served }
    }

    /// `http://127.0.0.1:PORT`: `DATABRICKS_HOST` and the upstream.
    fn host(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn served(&self) -> Vec<(String, u16)> {
        self.served.lock().unwrap().clone()
    }
}

/// Serving calls answered here; everything else passed to the stand-in
/// (the `Host` kept, so the OIDC URLs it hands out point back here).
async fn front(
    req: http::Request<hyper::body::Incoming>,
    behind: String,
    served: std::sync::Arc<std::sync::Mutex<Vec<(String, u16)>>>,
) -> Result<http::Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let pass = |method: http::Method, pq: &str, auth: Option<&http::HeaderValue>, body: Bytes| {
        let mut out = http::Request::builder()
            .method(method)
            .uri(format!("{behind}{pq}"));
        for (k, v) in &parts.headers {
            // The body's length is this request's own (hyper sets it).
            let own = [http::header::AUTHORIZATION, http::header::CONTENT_LENGTH];
            if !own.contains(k) {
                out = out.header(k, v);
            }
        }
        if let Some(a) = auth {
            out = out.header(http::header::AUTHORIZATION, a);
        }
        tap::client().request(out.body(Full::new(body)).unwrap())
    };
    let auth = parts.headers.get(http::header::AUTHORIZATION);
    let (status, ctype, answer) = if parts.uri.path().starts_with("/serving-endpoints/") {
        let check = format!(
            "/api/2.0/mlflow/experiments/get?experiment_id={}",
            databricks::EXPERIMENT_ID
        );
        let verdict = pass(http::Method::GET, &check, auth, Bytes::new())
            .await
            .unwrap();
        let status = verdict.status().as_u16();
        let shown = auth.map_or(String::new(), |a| a.to_str().unwrap().to_string());
        served.lock().unwrap().push((shown, status));
        match status {
            200 => (
                200,
                "application/json",
                Bytes::from(tap::fixture("openai_chat/plain.json")),
            ),
            s => (
                s,
                "application/json",
                verdict.into_body().collect().await.unwrap().to_bytes(),
            ),
        }
    } else {
        let pq = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let got = pass(parts.method.clone(), &pq, auth, body).await.unwrap();
        let status = got.status().as_u16();
        (
            status,
            "application/json",
            got.into_body().collect().await.unwrap().to_bytes(),
        )
    };
    let mut resp = http::Response::new(Full::new(answer));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    resp.headers_mut()
        .insert("content-type", http::HeaderValue::from_static(ctype));
    Ok(resp)
}

const INVOCATIONS: &str = "/serving-endpoints/my-llm/invocations";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_databricks_oauth_token_is_added_cached_and_refreshed_after_a_401() {
    let ws = Workspace::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = ws.host();
    let env = [
        ("DATABRICKS_HOST", host.as_str()),
        ("DATABRICKS_CLIENT_ID", databricks::CLIENT_ID),
        ("DATABRICKS_CLIENT_SECRET", databricks::CLIENT_SECRET),
        ("LLMTAP_UPSTREAM_CREDENTIAL", "databricks"),
    ];
    let bin = start(&host, dir.path(), "", &env).await;
    let (mut ids, mut bodies) = (Vec::new(), Vec::new());
    // No token to be had (the workspace is down): llmtap's own 502, saying why.
    ws.dbx.set_outage(true);
    let down = call(&bin, INVOCATIONS, CHAT_BODY, &[]).await;
    assert_eq!(down.status, 502);
    let message = String::from_utf8_lossy(&down.body).into_owned();
    assert!(
        message.contains("llmtap could not get the upstream credential (databricks)"),
        "{message}"
    );
    assert!(ws.served().is_empty(), "nothing sent without a credential");
    ids.push(down.trace_id());
    bodies.push(down.body);
    ws.dbx.set_outage(false);

    let mut invoke = async |want: u16| {
        let got = call(&bin, INVOCATIONS, CHAT_BODY, &[]).await;
        assert_eq!(got.status.as_u16(), want, "{:?}", got.body);
        ids.push(got.trace_id());
        bodies.push(got.body);
    };

    invoke(200).await;
    invoke(200).await;
    let served = ws.served();
    let first = served[0].0.clone();
    assert!(first.starts_with("Bearer ") && first.len() > 20, "{first}");
    assert_eq!(served[1], (first.clone(), 200), "the token is cached");
    assert_eq!(ws.dbx.token_grants(), 1);

    // The workspace stops accepting the token: the call is answered 401 as
    // the workspace said (not retried); the next one gets a new token.
    ws.dbx.expire_all_tokens();
    invoke(401).await;
    until("the 401 warning", || {
        !bin.logged("the upstream refused llmtap's credential")
            .is_empty()
    })
    .await;
    invoke(200).await;
    let served = ws.served();
    assert_eq!(served.len(), 4, "{served:?}");
    assert_eq!(served[2], (first.clone(), 401));
    let second = served[3].0.clone();
    assert_ne!(second, first);
    assert_eq!(served[3].1, 200);
    assert_eq!(ws.dbx.token_grants(), 2, "one refresh");

    let t1 = first.trim_start_matches("Bearer ").to_string();
    let t2 = second.trim_start_matches("Bearer ").to_string();
    let secrets = [databricks::CLIENT_SECRET, t1.as_str(), t2.as_str()];
    assert_nowhere(&bin, &secrets, &ids, &bodies).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_databricks_pat_goes_to_its_workspace_and_the_agents_token_wins() {
    let ws = Workspace::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = ws.host();
    let env = [
        ("DATABRICKS_HOST", host.as_str()),
        ("DATABRICKS_TOKEN", databricks::PAT),
        ("LLMTAP_UPSTREAM_CREDENTIAL", "databricks"),
    ];
    let bin = start(&host, dir.path(), "", &env).await;
    let got = call(&bin, INVOCATIONS, CHAT_BODY, &[]).await;
    assert_eq!(got.status, 200);
    let agent = call(
        &bin,
        INVOCATIONS,
        CHAT_BODY,
        &[("authorization", "Bearer dapi-agent")],
    )
    .await;
    assert_eq!(agent.status, 401, "the agent's own (bad) token was sent");
    let served = ws.served();
    assert_eq!(
        served,
        [
            (format!("Bearer {}", databricks::PAT), 200),
            ("Bearer dapi-agent".to_string(), 401)
        ]
    );
    assert_eq!(ws.dbx.token_grants(), 0);
    assert!(
        bin.logged("the upstream refused llmtap's credential")
            .is_empty(),
        "the 401 was for the agent's token"
    );
    let ids = [got.trace_id(), agent.trace_id()];
    assert_nowhere(&bin, &[databricks::PAT], &ids, &[got.body, agent.body]).await;
}
