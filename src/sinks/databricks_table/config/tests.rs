use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    let mut e: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    e.insert("HOME".into(), "/nonexistent-llmtap-test-home".into());
    e.insert(
        "DATABRICKS_HOST".into(),
        "https://h.cloud.databricks.com".into(),
    );
    e.insert("DATABRICKS_TOKEN".into(), "dapi-SECRET-0123".into());
    e
}

#[test]
fn mlflows_destination_variable_selects_a_uc_schema() {
    let cfg =
        DatabricksTableConfig::from_env(&env(&[("MLFLOW_TRACING_DESTINATION", "main.llmtap")]))
            .unwrap()
            .unwrap();
    assert_eq!(
        cfg.location,
        Location::UcSchema {
            catalog: "main".into(),
            schema: "llmtap".into()
        }
    );
    assert_eq!(
        cfg.spans_table,
        "main.llmtap.mlflow_experiment_trace_otel_spans"
    );
    assert!(!format!("{cfg:?}").contains("SECRET"));
}

#[test]
fn unset_or_an_experiment_id_leaves_it_off() {
    assert_eq!(DatabricksTableConfig::from_env(&env(&[])).unwrap(), None);
    let e = env(&[("MLFLOW_TRACING_DESTINATION", "1234")]);
    assert_eq!(DatabricksTableConfig::from_env(&e).unwrap(), None);
}

#[test]
fn the_spans_table_can_be_named_and_bad_names_are_refused() {
    let e = env(&[
        ("MLFLOW_TRACING_DESTINATION", "main.llmtap"),
        ("LLMTAP_DATABRICKS_UC_SPANS_TABLE", "main.llmtap.spans"),
    ]);
    let cfg = DatabricksTableConfig::from_env(&e).unwrap().unwrap();
    assert_eq!(cfg.spans_table, "main.llmtap.spans");
    for bad in ["main", "main..x", "main.llmtap.pre", "a b.c"] {
        let e = env(&[("MLFLOW_TRACING_DESTINATION", bad)]);
        let r = DatabricksTableConfig::from_env(&e);
        assert!(
            matches!(&r, Err(errs) if errs[0].starts_with("MLFLOW_TRACING_DESTINATION"))
                || r == Ok(None),
            "{bad}: {r:?}"
        );
    }
}

#[test]
fn a_sinks_table_with_a_table_prefix_needs_its_spans_table() {
    let t: toml::Table = toml::from_str(
        r#"
        kind = "databricks_table"
        destination = "main.llmtap.agent"
        spans_table = "main.llmtap.agent_otel_spans"
        "#,
    )
    .unwrap();
    let cfg = DatabricksTableConfig::from_table("uc", &t, &env(&[])).unwrap();
    assert_eq!(cfg.location.v4_id().as_deref(), Some("main.llmtap.agent"));
    assert_eq!(cfg.spans_table, "main.llmtap.agent_otel_spans");

    let t: toml::Table =
        toml::from_str("destination = \"main.llmtap.agent\"\nclient_secret = \"x\"").unwrap();
    let errs = DatabricksTableConfig::from_table("uc", &t, &env(&[])).unwrap_err();
    let all = errs.join("\n");
    assert!(
        all.contains("sinks.uc.client_secret: secrets are never written"),
        "{all}"
    );
    assert!(all.contains("needs its spans table"), "{all}");
}
