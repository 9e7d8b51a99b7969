//! Builds the adapters from settings and runs the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{Condition, ErrorHandlers, from_fn};
use actix_web::{App, HttpServer, web};
use actix_web_prom::{PrometheusMetrics, PrometheusMetricsBuilder};
use anyhow::Context as _;
use maas_inference::infra::Gateway;
use maas_knowledge::infra::Knowledge;
use maas_model::infra::Compute;
use maas_platform::settings::ServerSettings;
use maas_platform::{ApiServices, Platform};
use maas_shared::audit::AuditLog;
use maas_shared::clock::Clock;
use maas_shared::http::{
    OpenAi, Problem, error_fallback, json_config, normalize_path, path_config, query_config,
    request_id,
};
use maas_user::app::auth::Authenticator;
use maas_user::infra::Identity;
use utoipa_swagger_ui::SwaggerUi;

use crate::system::{self, Dependencies};

/// Extra routes mounted inside the real middleware stack, after every context's routes: a hook
/// for embedding the API and for tests that need a route the product does not have.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExtraRoutes {
    /// Mounted under `/api/v1` (problem+json errors).
    pub management: Option<fn(&mut web::ServiceConfig)>,
    /// Mounted under `/v1` (OpenAI error shape).
    pub openai: Option<fn(&mut web::ServiceConfig)>,
}

/// A bound, not yet running, API server.
pub struct Application {
    port: u16,
    redirect_port: Option<u16>,
    server: Server,
}

/// HTTPS on the main listener, and the plain listener that redirects to it.
struct Tls {
    config: rustls::ServerConfig,
    redirect: Option<TcpListener>,
}

/// The TLS setup of `settings`: `None` when no certificate is configured.
fn tls_listeners(settings: &ServerSettings) -> anyhow::Result<Option<Tls>> {
    let (cert, key) = match (&settings.tls_cert_file, &settings.tls_key_file) {
        (None, None) => {
            anyhow::ensure!(
                settings.http_redirect_port.is_none(),
                "server.http_redirect_port needs server.tls_cert_file and server.tls_key_file"
            );
            return Ok(None);
        }
        (Some(cert), Some(key)) => (cert, key),
        _ => anyhow::bail!("server.tls_cert_file and server.tls_key_file go together"),
    };
    let config = crate::tls::server_config(cert, key)?;
    let redirect = settings
        .http_redirect_port
        .map(|port| {
            TcpListener::bind((settings.host.as_str(), port))
                .with_context(|| format!("binding the redirect port {}:{port}", settings.host))
        })
        .transpose()?;
    Ok(Some(Tls { config, redirect }))
}

impl Application {
    /// Wires every context's services over `platform`'s pools, binds the listener and prepares
    /// the server.
    ///
    /// # Errors
    /// When a service cannot be built or the address cannot be bound.
    pub fn build(platform: &Platform) -> anyhow::Result<Self> {
        Self::build_with(platform, ExtraRoutes::default())
    }

    /// Like [`Application::build`], with [`ExtraRoutes`].
    ///
    /// # Errors
    /// As [`Application::build`].
    pub fn build_with(platform: &Platform, extra: ExtraRoutes) -> anyhow::Result<Self> {
        let settings = platform.settings();
        let ApiServices {
            identity,
            gateway,
            compute,
            knowledge,
            apps,
        } = platform.api()?;
        let metrics = metrics()?;
        let gauges = SettlementGauges::register(&metrics.registry)?;
        let overhead = GatewayOverhead::register(&metrics.registry)?;
        platform.watch_settlements(&identity, move |stats| gauges.set(stats));
        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .with_context(|| {
                format!("binding {}:{}", settings.server.host, settings.server.port)
            })?;
        let port = listener.local_addr()?.port();
        let tls = tls_listeners(&settings.server)?;
        let redirect_port = tls
            .as_ref()
            .and_then(|tls| tls.redirect.as_ref())
            .map(|l| l.local_addr().map(|a| a.port()))
            .transpose()?;
        let server = serve(
            listener,
            tls,
            metrics,
            &settings.server,
            Dependencies {
                db: platform.db().clone(),
                redis: platform.redis().clone(),
            },
            Services {
                identity,
                gateway,
                compute,
                knowledge,
                apps,
                clock: platform.clock(),
                audit: platform.audit(),
                gateway_limit: settings.gateway.max_request_bytes,
                console_assets: settings.compute.console_assets_dir.clone(),
                overhead,
            },
            extra,
        )?;
        Ok(Self {
            port,
            redirect_port,
            server,
        })
    }

    /// The plain-HTTP port that redirects to HTTPS, when one is configured.
    #[must_use]
    pub fn redirect_port(&self) -> Option<u16> {
        self.redirect_port
    }

    /// The bound port (useful when the configured port was 0).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server gracefully.
    #[must_use]
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM, then lets in-flight requests finish (`shutdown_timeout_secs`).
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

fn metrics() -> anyhow::Result<PrometheusMetrics> {
    PrometheusMetricsBuilder::new("maas")
        .endpoint("/metrics")
        .mask_unmatched_patterns("UNMATCHED")
        // Swagger UI assets are not API traffic.
        .exclude_regex("^/docs")
        .exclude_regex("^/redoc")
        .build()
        .map_err(|e| anyhow::anyhow!("building metrics: {e}"))
}

/// `maas_gateway_overhead_seconds`: the time a proxied call spent in the gateway itself (the
/// call minus its upstream's time), read from the `server-timing` header the gateway sets.
#[derive(Clone)]
struct GatewayOverhead(prometheus::Histogram);

impl GatewayOverhead {
    fn register(registry: &prometheus::Registry) -> anyhow::Result<Self> {
        let histogram = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "maas_gateway_overhead_seconds",
                "Time a proxied call spent in the gateway, excluding the upstream (to a stream's head)",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25,
            ]),
        )
        .context("defining the gateway overhead histogram")?;
        registry
            .register(Box::new(histogram.clone()))
            .context("registering the gateway overhead histogram")?;
        Ok(Self(histogram))
    }
}

/// The `gateway;dur=` milliseconds of a `server-timing` header.
fn gateway_ms(header: &str) -> Option<f64> {
    header
        .split(',')
        .find_map(|part| part.trim().strip_prefix("gateway;dur="))
        .and_then(|ms| ms.parse().ok())
}

async fn observe_overhead(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let overhead = req.app_data::<web::Data<GatewayOverhead>>().cloned();
    let response = next.call(req).await?;
    if let Some(overhead) = overhead
        && let Some(ms) = response
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .and_then(gateway_ms)
    {
        overhead.0.observe(ms / 1000.0);
    }
    Ok(response)
}

/// The settlement stream's state in `/metrics`: how far the worker's drain into PostgreSQL is
/// behind, and what it wrote or failed to write (all workers together).
struct SettlementGauges {
    backlog: prometheus::IntGauge,
    pending: prometheus::IntGauge,
    lag: prometheus::Gauge,
    drained: prometheus::IntGauge,
    failed: prometheus::IntGauge,
}

impl SettlementGauges {
    fn register(registry: &prometheus::Registry) -> anyhow::Result<Self> {
        fn add<G: prometheus::core::Collector + Clone + 'static>(
            registry: &prometheus::Registry,
            gauge: prometheus::Result<G>,
        ) -> anyhow::Result<G> {
            let gauge = gauge.context("defining a settlement gauge")?;
            registry
                .register(Box::new(gauge.clone()))
                .context("registering a settlement gauge")?;
            Ok(gauge)
        }
        Ok(Self {
            backlog: add(
                registry,
                prometheus::IntGauge::new(
                    "maas_settlement_stream_backlog",
                    "Settlements in the stream not yet written to PostgreSQL",
                ),
            )?,
            pending: add(
                registry,
                prometheus::IntGauge::new(
                    "maas_settlement_stream_pending",
                    "Settlements delivered to a worker and not yet acknowledged",
                ),
            )?,
            lag: add(
                registry,
                prometheus::Gauge::new(
                    "maas_settlement_stream_lag_seconds",
                    "Age of the oldest settlement not yet written to PostgreSQL",
                ),
            )?,
            drained: add(
                registry,
                prometheus::IntGauge::new(
                    "maas_settlements_drained_total",
                    "Settlements written to PostgreSQL by all workers",
                ),
            )?,
            failed: add(
                registry,
                prometheus::IntGauge::new(
                    "maas_settlements_failed_total",
                    "Settlement writes that failed (retried) or entries set aside as unreadable",
                ),
            )?,
        })
    }

    fn set(&self, stats: &maas_user::domain::ports::StreamStats) {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.backlog.set(int(stats.backlog));
        self.pending.set(int(stats.pending));
        self.lag.set(stats.lag_seconds);
        self.drained.set(int(stats.drained));
        self.failed.set(int(stats.failed));
    }
}

fn cors(origins: &[String]) -> Cors {
    let cors = Cors::default()
        .allow_any_method()
        .allow_any_header()
        .expose_headers([
            "x-request-id",
            "retry-after",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ])
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        return cors.allow_any_origin();
    }
    origins
        .iter()
        .fold(cors, |cors, origin| cors.allowed_origin(origin))
}

/// The application services handlers reach through app data.
struct Services {
    identity: Identity,
    gateway: Gateway,
    compute: Compute,
    knowledge: Knowledge,
    apps: maas_apps::infra::Apps,
    clock: Arc<dyn Clock>,
    audit: Arc<dyn AuditLog>,
    /// Body limit of `/v1` (images travel inline).
    gateway_limit: usize,
    /// Where the console's fetched xterm.js files are.
    console_assets: std::path::PathBuf,
    /// The gateway overhead histogram.
    overhead: GatewayOverhead,
}

fn serve(
    listener: TcpListener,
    tls: Option<Tls>,
    metrics: PrometheusMetrics,
    settings: &ServerSettings,
    deps: Dependencies,
    services: Services,
    extra: ExtraRoutes,
) -> anyhow::Result<Server> {
    let deps = web::Data::new(deps);
    let authenticator: web::Data<Arc<dyn Authenticator>> =
        web::Data::new(Arc::new(services.identity.auth.clone()));
    let accounts = web::Data::new(services.identity.accounts.clone());
    let sessions = web::Data::new(services.identity.sessions.clone());
    let keys = web::Data::new(services.identity.keys.clone());
    let quotas = web::Data::new(services.identity.quotas.clone());
    let clock = web::Data::new(services.clock);
    let audit_log: web::Data<Arc<dyn AuditLog>> = web::Data::new(services.audit);
    let gateway = web::Data::new(services.gateway.gateway.clone());
    let providers = web::Data::new(services.gateway.providers.clone());
    let usage = web::Data::new(services.gateway.usage.clone());
    let conversations = web::Data::new(services.gateway.conversations.clone());
    let registry = web::Data::new(services.compute.registry.clone());
    let servers = web::Data::new(services.compute.servers.clone());
    let nodes = web::Data::new(services.compute.nodes.clone());
    let deployments = web::Data::new(services.compute.deployments.clone());
    let feed = web::Data::new(services.compute.feed.clone());
    let ssh = web::Data::new(services.compute.ssh.clone());
    let tasks = web::Data::new(services.compute.tasks.clone());
    let knowledge = web::Data::new(services.knowledge.service.clone());
    let stores = web::Data::new(services.knowledge.stores.clone());
    let apps = web::Data::new(services.apps.apps.clone());
    let app_endpoint = web::Data::new(services.apps.endpoint.clone());
    let overhead = web::Data::new(services.overhead.clone());
    let console_assets = web::Data::new(maas_model::interface::ssh::ConsoleAssets(
        services.console_assets.clone(),
    ));
    let openapi = crate::openapi::document();
    let json_limit = settings.json_limit_bytes;
    let gateway_limit = services.gateway_limit;
    let origins = settings.cors_allowed_origins.clone();
    let https_port = web::Data::new(crate::tls::HttpsPort(
        tls.as_ref()
            .filter(|tls| tls.redirect.is_some())
            .map(|_| listener.local_addr().map(|a| a.port()))
            .transpose()?,
    ));
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(deps.clone())
            .app_data(https_port.clone())
            .app_data(authenticator.clone())
            .app_data(accounts.clone())
            .app_data(sessions.clone())
            .app_data(keys.clone())
            .app_data(quotas.clone())
            .app_data(clock.clone())
            .app_data(audit_log.clone())
            .app_data(gateway.clone())
            .app_data(providers.clone())
            .app_data(usage.clone())
            .app_data(conversations.clone())
            .app_data(registry.clone())
            .app_data(servers.clone())
            .app_data(nodes.clone())
            .app_data(deployments.clone())
            .app_data(feed.clone())
            .app_data(ssh.clone())
            .app_data(tasks.clone())
            .app_data(knowledge.clone())
            .app_data(stores.clone())
            .app_data(apps.clone())
            .app_data(app_endpoint.clone())
            .app_data(console_assets.clone())
            .app_data(overhead.clone())
            .app_data(json_config::<Problem>(json_limit))
            .app_data(query_config::<Problem>())
            .app_data(path_config::<Problem>())
            // Innermost first: the fallback rewrites any non-JSON error actix produced.
            .wrap(ErrorHandlers::new().default_handler(error_fallback))
            .wrap(Condition::new(!origins.is_empty(), cors(&origins)))
            .wrap(from_fn(observe_overhead))
            .wrap(metrics.clone())
            .wrap(from_fn(request_id))
            .wrap(from_fn(normalize_path))
            .wrap(from_fn(crate::tls::redirect_plain_http))
            .configure(system::configure)
            .configure(maas_inference::configure_legacy)
            .configure(maas_model::configure_console)
            .service(
                web::scope("/api/v1")
                    .configure(maas_user::configure)
                    .configure(maas_model::configure)
                    .configure(maas_finetune::configure)
                    .configure(maas_knowledge::configure)
                    .configure(maas_apps::configure)
                    .configure(maas_inference::configure_admin)
                    .configure(|cfg| extra.management.into_iter().for_each(|routes| routes(cfg))),
            )
            .service(
                web::scope("/v1")
                    .app_data(json_config::<OpenAi>(gateway_limit))
                    .app_data(query_config::<OpenAi>())
                    .app_data(path_config::<OpenAi>())
                    .configure(maas_inference::configure)
                    .configure(maas_knowledge::configure_openai)
                    .configure(maas_apps::configure_endpoint)
                    .configure(|cfg| extra.openai.into_iter().for_each(|routes| routes(cfg))),
            )
            .configure(crate::redoc::configure)
            .service(web::redirect("/docs", "/docs/"))
            .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", openapi.clone()))
    })
    .keep_alive(Duration::from_secs(settings.keep_alive_secs))
    .shutdown_timeout(settings.shutdown_timeout_secs)
    .on_connect(|conn, _| {
        // Nagle + delayed ACK would add ~40 ms to small streamed responses.
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>()
            && let Err(err) = tcp.set_nodelay(true)
        {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
    });
    if settings.workers > 0 {
        server = server.workers(settings.workers);
    }
    let server = match tls {
        None => server.listen(listener)?,
        Some(Tls { config, redirect }) => {
            let server = server.listen_rustls_0_23(listener, config)?;
            match redirect {
                Some(plain) => server.listen(plain)?,
                None => server,
            }
        }
    };
    Ok(server.run())
}
