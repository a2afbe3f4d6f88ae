//! The list of destinations: the one place that names every sink kind.
//! Builds the sinks a configuration lists.

use std::sync::Arc;

use super::{file, mlflow, otlp, Context, Sink};
use crate::config::{Config, SinkConfig};

/// The sinks a configuration names (none when tracing is off).
pub fn build(cfg: &Config) -> Vec<Arc<dyn Sink>> {
    match &cfg.sink {
        SinkConfig::Disabled => vec![],
        SinkConfig::Mlflow(m) => vec![Arc::new(mlflow::MlflowSink::new(
            m.clone(),
            cfg.connect_timeout,
            cfg.export.timeout,
        ))],
        SinkConfig::File(f) => vec![Arc::new(file::FileSink::new(f.clone()))],
        // TEMPORARY (branch i9-otlp) until the multi-sink registry lands.
        SinkConfig::Otlp(o) => vec![otlp::build(
            "otlp",
            o.clone(),
            &Context {
                connect_timeout: cfg.connect_timeout,
                timeout: cfg.export.timeout,
                service_name: cfg.service_name.clone(),
            },
        )],
    }
}
