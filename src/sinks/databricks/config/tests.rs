use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    let mut e: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // No profile file is read in these tests.
    e.insert("HOME".into(), "/nonexistent-llmtap-test-home".into());
    e
}

const RECIPE: &[(&str, &str)] = &[
    ("MLFLOW_TRACKING_URI", "databricks"),
    ("MLFLOW_EXPERIMENT_ID", "1234"),
    ("DATABRICKS_HOST", "https://adb-1.azuredatabricks.net"),
    ("DATABRICKS_TOKEN", "dapi-SECRET-0123"),
];

#[test]
fn the_recipe_env_selects_the_sink() {
    let cfg = DatabricksConfig::from_env(&env(RECIPE)).unwrap().unwrap();
    assert_eq!(cfg.experiment, ExperimentRef::Id("1234".into()));
    assert_eq!(cfg.workspace.host, "https://adb-1.azuredatabricks.net");
    assert_eq!(cfg.max_traces_per_second, DEFAULT_MAX_TRACES_PER_SECOND);
    let debug = format!("{cfg:?}");
    assert!(!debug.contains("dapi-SECRET"), "{debug}");
}

#[test]
fn other_tracking_uris_leave_it_off() {
    assert_eq!(DatabricksConfig::from_env(&env(&[])).unwrap(), None);
    let e = env(&[("MLFLOW_TRACKING_URI", "http://mlflow:5000")]);
    assert_eq!(DatabricksConfig::from_env(&e).unwrap(), None);
}

#[test]
fn the_name_wins_and_must_be_a_workspace_path() {
    let mut e = env(RECIPE);
    e.insert(
        "MLFLOW_EXPERIMENT_NAME".into(),
        "/Users/me@example.com/app".into(),
    );
    let cfg = DatabricksConfig::from_env(&e).unwrap().unwrap();
    assert_eq!(
        cfg.experiment,
        ExperimentRef::Name("/Users/me@example.com/app".into())
    );
    e.insert("MLFLOW_EXPERIMENT_NAME".into(), "app".into());
    let errs = DatabricksConfig::from_env(&e).unwrap_err();
    assert!(errs[0].starts_with("MLFLOW_EXPERIMENT_NAME:"), "{errs:?}");
}

#[test]
fn every_missing_piece_is_reported_without_secrets() {
    let e = env(&[
        ("MLFLOW_TRACKING_URI", "databricks"),
        ("DATABRICKS_TOKEN", "dapi-SECRET-0123"),
    ]);
    let errs = DatabricksConfig::from_env(&e).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("MLFLOW_EXPERIMENT_ID"), "{errs:?}");
    assert!(errs[1].contains("DATABRICKS_HOST"), "{errs:?}");
    assert!(!errs.concat().contains("dapi-SECRET"));
}

#[test]
fn a_sinks_table_names_experiment_profile_host_and_rate() {
    let t: toml::Table = toml::from_str(
        r#"
        kind = "databricks"
        experiment_name = "/Shared/llmtap"
        host = "https://dbc-2.cloud.databricks.com"
        max_traces_per_second = 120
        max_in_flight = 4
        "#,
    )
    .unwrap();
    let e = env(&[("DATABRICKS_TOKEN", "dapi-SECRET-0123")]);
    let cfg = DatabricksConfig::from_table("prod", &t, &e).unwrap();
    assert_eq!(cfg.experiment, ExperimentRef::Name("/Shared/llmtap".into()));
    assert_eq!(cfg.workspace.host, "https://dbc-2.cloud.databricks.com");
    assert_eq!(cfg.max_traces_per_second, 120.0);
    assert_eq!(cfg.max_in_flight, 4);
}

#[test]
fn a_sinks_table_refuses_secrets_unknown_keys_and_bad_values() {
    let t: toml::Table = toml::from_str(
        r#"
        kind = "databricks"
        experiment_id = "1"
        experiment_name = "/x"
        token = "dapi-SECRET-0123"
        colour = "blue"
        max_traces_per_second = 0
        "#,
    )
    .unwrap();
    let e = env(&[
        ("DATABRICKS_HOST", "https://h.cloud.databricks.com"),
        ("DATABRICKS_TOKEN", "dapi-x"),
    ]);
    let errs = DatabricksConfig::from_table("prod", &t, &e).unwrap_err();
    let all = errs.join("\n");
    assert!(
        all.contains("sinks.prod.token: secrets are never written"),
        "{all}"
    );
    assert!(all.contains("sinks.prod.colour: unknown key"), "{all}");
    assert!(all.contains("sinks.prod.max_traces_per_second"), "{all}");
    assert!(all.contains("not both"), "{all}");
    assert!(!all.contains("dapi-SECRET"), "{all}");
}

#[test]
fn profiles_come_from_the_tracking_uri() {
    let e = env(&[("MLFLOW_TRACKING_URI", "databricks://prod")]);
    assert_eq!(tracking_uri_profile(&e), Ok(Some(Some("prod".into()))));
    let e = env(&[("MLFLOW_TRACKING_URI", "databricks")]);
    assert_eq!(tracking_uri_profile(&e), Ok(Some(None)));
}

#[test]
fn a_uc_destination_without_an_experiment_is_uc_only() {
    let e = env(&[
        ("MLFLOW_TRACKING_URI", "databricks"),
        ("MLFLOW_TRACING_DESTINATION", "main.llmtap"),
        ("DATABRICKS_HOST", "https://h.cloud.databricks.com"),
        ("DATABRICKS_TOKEN", "dapi-x"),
    ]);
    assert_eq!(DatabricksConfig::from_env(&e).unwrap(), None);
    let mut both = e.clone();
    both.insert("MLFLOW_EXPERIMENT_ID".into(), "1".into());
    assert!(DatabricksConfig::from_env(&both).unwrap().is_some());
}
