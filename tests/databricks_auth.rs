//! `llmtap::databricks::Credentials` against the Databricks stand-in
//! (tests/support/databricks.rs): PAT; OAuth discovery and grant; reuse;
//! refresh before expiry; a 401 -> one new token; concurrent callers -> one
//! grant; token endpoint down -> a transient error; wrong secret -> a
//! permanent one; the workspace id for `x-databricks-org-id`.

#[path = "support/databricks.rs"]
mod databricks;

use std::collections::HashMap;
use std::time::Duration;

use databricks::Databricks;
use llmtap::databricks::{resolve, AuthError, Credentials};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn creds(dbx: &Databricks, oauth: bool) -> Credentials {
    let host = dbx.host();
    let e = if oauth {
        env(&[
            ("DATABRICKS_HOST", &host),
            ("DATABRICKS_CLIENT_ID", databricks::CLIENT_ID),
            ("DATABRICKS_CLIENT_SECRET", databricks::CLIENT_SECRET),
        ])
    } else {
        env(&[
            ("DATABRICKS_HOST", &host),
            ("DATABRICKS_TOKEN", databricks::PAT),
        ])
    };
    creds_for(&e)
}

fn creds_for(e: &HashMap<String, String>) -> Credentials {
    let cfg = resolve(e, None).expect("resolve");
    let client = llmtap::client::client(Duration::from_secs(2), &[]);
    Credentials::new(&cfg, client, Duration::from_secs(2)).expect("credentials")
}

/// An API call the stand-in checks the header on; returns its status.
async fn api_status(dbx: &Databricks, auth: &http::HeaderValue) -> u16 {
    use bytes::Bytes;
    use http_body_util::Full;
    let client = llmtap::client::client::<Full<Bytes>>(Duration::from_secs(2), &[]);
    let url = format!(
        "{}/api/2.0/mlflow/experiments/get?experiment_id={}",
        dbx.host(),
        databricks::EXPERIMENT_ID
    );
    let req = http::Request::get(url)
        .header(http::header::AUTHORIZATION, auth.clone())
        .body(Full::new(Bytes::new()))
        .unwrap();
    client
        .request(req)
        .await
        .expect("stand-in answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn pat_is_sent_as_is_and_never_fetches() {
    let dbx = Databricks::start().await;
    let c = creds(&dbx, false);
    let h = c.authorization().await.unwrap();
    assert_eq!(h.to_str().unwrap(), format!("Bearer {}", databricks::PAT));
    assert!(h.is_sensitive());
    assert!(!c.is_refreshable());
    assert_eq!(api_status(&dbx, &h).await, 200);
    assert!(dbx.requests_to("/oidc").is_empty());
    assert!(!format!("{c:?}").contains(databricks::PAT));
}

#[tokio::test]
async fn oauth_discovers_fetches_and_reuses_the_token() {
    let dbx = Databricks::start().await;
    let c = creds(&dbx, true);
    let h1 = c.authorization().await.unwrap();
    assert!(h1.is_sensitive());
    assert!(h1.to_str().unwrap().starts_with("Bearer standin-oauth-"));
    assert_eq!(api_status(&dbx, &h1).await, 200);
    let h2 = c.clone().authorization().await.unwrap();
    assert_eq!(h1, h2, "a clone shares the cached token");
    assert_eq!(dbx.token_grants(), 1);
    assert_eq!(c.grants(), 1);
    // The SDK's discovery path: host metadata -> OIDC discovery -> token.
    let paths: Vec<String> = dbx.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths[..3],
        [
            "/.well-known/databricks-config",
            "/oidc/.well-known/oauth-authorization-server",
            "/oidc/v1/token"
        ]
    );
    let grant = &dbx.requests_to("/oidc/v1/token")[0];
    assert_eq!(
        grant.body.as_ref(),
        b"grant_type=client_credentials&scope=all-apis"
    );
    assert_eq!(
        grant.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
}

#[tokio::test]
async fn refreshes_before_expiry_and_never_hands_out_an_expired_token() {
    let dbx = Databricks::start().await;
    dbx.set_token_lifetime(Duration::from_secs(4)); // stale after 2 s, unusable after 3 s
    let c = creds(&dbx, true);
    let h1 = c.authorization().await.unwrap();
    assert_eq!(c.authorization().await.unwrap(), h1, "fresh: reused");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let h2 = c.authorization().await.unwrap();
    assert_ne!(h1, h2, "stale: replaced");
    assert_eq!(
        api_status(&dbx, &h1).await,
        200,
        "replaced before it expired"
    );
    assert_eq!(dbx.token_grants(), 2);
    // Under load across several lifetimes, every token handed out is accepted.
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        let h = c.authorization().await.unwrap();
        assert_eq!(api_status(&dbx, &h).await, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dbx.rejections().is_empty(), "{:?}", dbx.rejections());
    assert!(
        (3..=6).contains(&dbx.token_grants()),
        "{} grants",
        dbx.token_grants()
    );
}

#[tokio::test]
async fn a_stale_token_outlives_a_failed_refresh_but_not_its_expiry() {
    let dbx = Databricks::start().await;
    dbx.set_token_lifetime(Duration::from_secs(8)); // stale after 4 s, unusable after 6 s
    let c = creds(&dbx, true);
    let h1 = c.authorization().await.unwrap();
    tokio::time::sleep(Duration::from_millis(4300)).await;
    dbx.fail_next("/oidc/v1/token", 503, 1);
    assert_eq!(c.authorization().await.unwrap(), h1, "stale token kept");
    assert_eq!(api_status(&dbx, &h1).await, 200);
    assert_eq!(c.authorization().await.unwrap(), h1);
    assert_eq!(dbx.requests_to("/oidc/v1/token").len(), 2, "no retry storm");
    tokio::time::sleep(Duration::from_millis(1900)).await;
    let h2 = c.authorization().await.unwrap();
    assert_ne!(
        h1, h2,
        "past its usable time the old token is never handed out"
    );
    assert_eq!(dbx.token_grants(), 2);
}

#[tokio::test]
async fn a_401_invalidates_and_exactly_one_new_token_is_fetched() {
    let dbx = Databricks::start().await;
    let c = creds(&dbx, true);
    let old = c.authorization().await.unwrap();
    dbx.expire_all_tokens();
    assert_eq!(api_status(&dbx, &old).await, 401);
    // Five calls failed with the same token: one refresh.
    for _ in 0..5 {
        c.invalidate_token(&old);
    }
    let new = c.authorization().await.unwrap();
    assert_ne!(old, new);
    assert_eq!(api_status(&dbx, &new).await, 200);
    c.invalidate_token(&old); // a late 401 for the old token: no effect
    assert_eq!(c.authorization().await.unwrap(), new);
    assert_eq!(dbx.token_grants(), 2);
    c.invalidate();
    assert_ne!(c.authorization().await.unwrap(), new);
    assert_eq!(dbx.token_grants(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_share_one_grant() {
    let dbx = Databricks::start().await;
    let c = creds(&dbx, true);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.authorization().await })
        })
        .collect();
    let mut headers = Vec::new();
    for t in tasks {
        headers.push(t.await.unwrap().unwrap());
    }
    assert!(headers.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(dbx.token_grants(), 1);
    assert_eq!(dbx.requests_to("/oidc/v1/token").len(), 1);
}

#[tokio::test]
async fn token_endpoint_down_is_transient_and_recovers() {
    let dbx = Databricks::start().await;
    let c = creds(&dbx, true);
    dbx.fail_next("/oidc/v1/token", 503, 1);
    let e = c.authorization().await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(matches!(e, AuthError::Unavailable { status: 503, .. }));
    let h = c.authorization().await.unwrap();
    assert_eq!(api_status(&dbx, &h).await, 200);

    // Port closed: no answer at all, still transient.
    let c2 = creds(&dbx, true);
    dbx.stop().await;
    let e = c2.authorization().await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(matches!(e, AuthError::Unreachable { .. }), "{e:?}");
    dbx.restart().await;
    assert!(c2.authorization().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_waiting_on_a_failed_fetch_share_its_error() {
    let dbx = Databricks::start().await;
    let c = creds(&dbx, true);
    c.org_id().await; // discovery state warm; only the grant is in question
    dbx.set_outage(true);
    // A slow failure: every caller arrives while the first fetch is in
    // flight (a fast one could fail before the last task is even polled).
    dbx.set_latency(Duration::from_millis(300));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.authorization().await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().unwrap_err().is_transient());
    }
    let tries = dbx.requests_to("/oidc").len();
    assert!(
        tries <= 4,
        "{tries} requests to /oidc for 8 callers during an outage"
    );
}

#[tokio::test]
async fn wrong_secret_is_permanent_and_secret_free() {
    let dbx = Databricks::start().await;
    let host = dbx.host();
    let c = creds_for(&env(&[
        ("DATABRICKS_HOST", &host),
        ("DATABRICKS_CLIENT_ID", databricks::CLIENT_ID),
        ("DATABRICKS_CLIENT_SECRET", "not-the-secret-xyz"),
    ]));
    let e = c.authorization().await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    let text = format!("{e} {e:?}");
    assert!(
        text.contains("401") && text.contains("invalid_client"),
        "{text}"
    );
    assert!(!text.contains("not-the-secret-xyz"), "{text}");
    assert_eq!(dbx.token_grants(), 0);
}

#[tokio::test]
async fn org_id_comes_from_host_metadata() {
    let dbx = Databricks::start().await;
    let c = creds(&dbx, false);
    let id = c.org_id().await.expect("workspace id");
    assert_eq!(id, databricks::WORKSPACE_ID);
    assert_eq!(c.org_id().await.unwrap(), id);
    assert_eq!(
        dbx.requests_to("/.well-known/databricks-config").len(),
        1,
        "cached"
    );
    assert_eq!(c.host(), dbx.host());
}

#[tokio::test]
async fn a_profile_file_resolves_to_working_credentials() {
    let dbx = Databricks::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("databrickscfg");
    std::fs::write(
        &path,
        format!(
            "[DEFAULT]\nhost = http://127.0.0.1:1\n\n[llmtap]\nhost = {}\nclient_id = {}\nclient_secret = {}\n",
            dbx.host(),
            databricks::CLIENT_ID,
            databricks::CLIENT_SECRET
        ),
    )
    .unwrap();
    let e = env(&[
        ("DATABRICKS_CONFIG_FILE", path.to_str().unwrap()),
        ("DATABRICKS_CONFIG_PROFILE", "llmtap"),
    ]);
    let c = creds_for(&e);
    let h = c.authorization().await.unwrap();
    assert_eq!(api_status(&dbx, &h).await, 200);
}
