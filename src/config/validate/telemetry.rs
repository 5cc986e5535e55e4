//! `[log]` and `[tracing]`.

use crate::config::model::*;
use crate::config::raw::*;
use crate::config::spans::KeyPath;

use super::Validator;

impl Validator<'_> {
    pub(super) fn log(&mut self, v: Option<Value>) -> Option<LogConfig> {
        let p = KeyPath::root().key("log");
        let raw: RawLog = match v {
            Some(v) => de_unit(v, &p, &mut self.issues)?,
            None => RawLog::default(),
        };
        let format = match raw.format.as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                self.err(
                    p.key("format"),
                    format!("unknown log format {other:?}; valid: one of json, text"),
                );
                LogFormat::Json
            }
        };
        let level = raw.level.unwrap_or_else(|| "info".to_string());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
            self.err(p.key("level"), format!("bad log level {level:?} ({e}); valid: trace, debug, info, warn, error, or a filter like \"info,cutover=debug\""));
        }
        Some(LogConfig {
            format,
            level,
            access_log: raw.access_log.unwrap_or(true),
        })
    }

    pub(super) fn tracing(&mut self, v: Value) -> Option<TracingConfig> {
        let p = KeyPath::root().key("tracing");
        let raw: RawTracing = de_unit(v, &p, &mut self.issues)?;
        if let Some(e) = &raw.otlp_endpoint {
            self.url(e, p.key("otlp_endpoint"));
        }
        let sample_ratio = self
            .ranged(
                raw.sample_ratio,
                p.key("sample_ratio"),
                |x| (0.0..=1.0).contains(&x),
                "0.0 to 1.0",
            )
            .unwrap_or(1.0);
        let otlp_ca_file = raw.otlp_ca_file.as_deref().map(|f| self.file_path(f));
        let otlp_ca_pem = otlp_ca_file.as_deref().and_then(|f| {
            let what = "a PEM file of CA certificates";
            self.pem_certificates(f, p.key("otlp_ca_file"), what, what)
        });
        Some(TracingConfig {
            otlp_endpoint: raw.otlp_endpoint,
            sample_ratio,
            otlp_ca_file,
            otlp_ca_pem,
        })
    }
}
