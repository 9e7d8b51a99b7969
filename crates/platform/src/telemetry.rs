//! Log output: pretty for people, JSON for machines. Every line written inside a request carries
//! the request's span fields (`request_id`, method, path).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::settings::{LogFormat, TelemetrySettings};

/// Installs the global subscriber writing to stdout. `RUST_LOG` overrides the configured filter.
///
/// # Errors
/// When the filter does not parse or a subscriber is already installed.
pub fn init(settings: &TelemetrySettings) -> anyhow::Result<()> {
    init_with_writer(settings, std::io::stdout)
}

/// Like [`init`], writing to `writer` (tests pass a test writer or a sink).
///
/// # Errors
/// As [`init`].
pub fn init_with_writer<W>(settings: &TelemetrySettings, writer: W) -> anyhow::Result<()>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(&settings.filter)?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match settings.format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the tracing subscriber: {e}"))
}
