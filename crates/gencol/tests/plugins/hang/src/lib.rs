//! A plugin whose exporter never returns: gencol must time the call out, retry, keep
//! every other exporter delivering, and still stop on SIGTERM within shutdown_timeout.

use gencol_plugin_sdk::{ConfigError, ExportError, ExportTraceServiceRequest, ExporterContext, ExporterPlugin};

struct HangingExporter;

/// Blocks the calling thread for good, as a plugin stuck on a dead socket would.
fn hang() -> ! {
    loop {
        std::thread::park();
    }
}

impl ExporterPlugin for HangingExporter {
    const TYPE: &'static str = "hanging";
    const ABOUT: &'static str = "test plugin: never returns from export";

    fn validate(config: &serde_json::Value, _ctx: &ExporterContext) -> Result<Self, Vec<ConfigError>> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct NoSettings {}
        let NoSettings {} = gencol_plugin_sdk::config::decode(config)?;
        Ok(HangingExporter)
    }

    fn export(&self, _batch: &ExportTraceServiceRequest) -> Result<(), ExportError> {
        hang()
    }

    fn test_connection(&self) -> Result<String, ExportError> {
        hang()
    }
}

gencol_plugin_sdk::export_plugin! {
    name: "hang-test",
    version: env!("CARGO_PKG_VERSION"),
    exporters: [HangingExporter],
}
