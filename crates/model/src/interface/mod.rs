//! HTTP: the registry, servers, stats and the agents' API (all under `/api/v1`).

/// `actor!(req, caller, ctx, actor)`: the request's action context and the calling actor.
macro_rules! actor {
    ($req:expr, $caller:expr, $ctx:ident, $actor:ident) => {
        let $ctx = maas_user::contract::action_context(&$req);
        let $actor = maas_user::contract::Actor::Caller($caller.principal(), &$ctx);
    };
}

pub mod deployments;
pub mod dto;
pub mod handlers;
pub mod node;
pub mod ssh;
pub mod tasks;

use actix_web::web;

/// The OpenAPI document of this context, nested by `maas-api` under `/api/v1`.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(
        handlers::create_brand, handlers::list_brands, handlers::get_brand, handlers::update_brand, handlers::delete_brand,
        handlers::reorder_brands, handlers::upload_brand_logo, handlers::remove_brand_logo,
        handlers::create_card, handlers::list_cards, handlers::get_card, handlers::update_card, handlers::delete_card,
        handlers::create_model, handlers::list_models, handlers::get_model, handlers::update_model, handlers::delete_model,
        handlers::upload_model_logo, handlers::remove_model_logo, handlers::get_logo,
        handlers::create_server, handlers::list_servers, handlers::get_server, handlers::update_server, handlers::delete_server,
        handlers::issue_join_token, handlers::approve_agent, handlers::agent_health, handlers::stats,
        node::join, node::heartbeat, node::report,
        deployments::create_deployment, deployments::list_deployments, deployments::get_deployment,
        deployments::update_deployment, deployments::scale_deployment, deployments::delete_deployment,
        deployments::start_deployment, deployments::stop_deployment, deployments::restart_deployment,
        deployments::deployment_events, deployments::deployment_instances, deployments::instance_logs,
        deployments::assignments, deployments::report_instances,
        ssh::set_ssh, ssh::get_ssh, ssh::delete_ssh, ssh::repin_ssh, ssh::check_server, ssh::last_check, ssh::check_all,
        ssh::server_resources, ssh::many_resources, ssh::terminal_ticket, ssh::terminal,
        tasks::create_task, tasks::list_tasks, tasks::get_task, tasks::update_task, tasks::delete_task,
        tasks::run_task, tasks::task_runs, tasks::task_run,
    ),
    components(schemas(
        dto::BrandRequest, dto::BrandPatch, dto::BrandResponse, dto::ReorderBrandsRequest,
        dto::CardRequest, dto::CardPatch, dto::CardResponse,
        dto::CapabilityDto, dto::EngineDto, dto::SourceDto, dto::ModelRequest, dto::ModelPatch, dto::ModelResponse, dto::LogoUpload,
        dto::ServerRequest, dto::ServerPatch, dto::ServerResponse, dto::CreatedServerResponse, dto::JoinTokenResponse,
        dto::ApproveAgentRequest, dto::AgentHealthResponse, dto::AgentResponse, dto::ReportedResources, dto::ResourcesDto,
        dto::DiskDto, dto::GpuDto, dto::NodeStatusDto, dto::StatsResponse,
        dto::JoinRequest, dto::JoinResponse, dto::HeartbeatResponse, dto::ReportRequest,
        deployments::PlacementDto, deployments::DeploymentRequest, deployments::DeploymentPatchRequest,
        deployments::ReplicasRequest, deployments::DeploymentStateDto, deployments::DeploymentResponse,
        deployments::InstanceStateDto, deployments::InstanceResponse, deployments::DeployEventResponse,
        deployments::InstancesResponse, deployments::AssignmentDto, deployments::AssignmentsResponse,
        deployments::InstanceReportDto, deployments::InstancesReportRequest, deployments::InstancesReportResponse,
        ssh::SshAccessRequest, ssh::HostKeyDto, ssh::SshAccessResponse, ssh::ProbeDto, ssh::CheckStatusDto,
        ssh::ServerCheckResponse, ssh::MetricDto, ssh::ResourcesResponse, ssh::ResourcesRequest,
        ssh::TicketRequest, ssh::TicketResponse,
        tasks::ScheduleDto, tasks::TaskRequest, tasks::TaskPatch, tasks::TaskResponse, tasks::RunStateDto,
        tasks::RunResponse, tasks::RunsQueuedResponse,
    )),
    tags(
        (name = "registry", description = "Accelerator brands and cards, and the models the platform can deploy (admins write, every signed-in user reads)"),
        (name = "servers", description = "GPU servers and their node agents (admin), and platform figures"),
        (name = "deployments", description = "Model services deployed onto the servers (admin): run by deploy jobs, reconciled by each node's agent, reached through `/v1` under their served names"),
        (name = "tasks", description = "Remote tasks (admin): a command run on servers once, every N seconds or on a cron schedule, over SSH or through the agent; each run kept with exit code, output and duration"),
        (name = "agents", description = "What `maas-agent` calls: join with a join token, then heartbeat and report with its node credential"),
    )
)]
pub struct ModelApi;

/// Registers the console pages this context serves (at the root, outside `/api/v1`).
pub fn configure_console(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/console/servers/{server_id}/terminal")
            .route(web::get().to(ssh::console_page)),
    )
    .service(web::resource("/console/assets/{name}").route(web::get().to(ssh::console_asset)));
}

/// Registers this context's routes (under `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    use deployments as d;
    use handlers as h;
    cfg.service(
        web::resource("/brands")
            .route(web::get().to(h::list_brands))
            .route(web::post().to(h::create_brand)),
    )
    // `order` before `{brand_id}`, which would otherwise claim the word.
    .service(web::resource("/brands/order").route(web::put().to(h::reorder_brands)))
    .service(
        web::resource("/brands/{brand_id}")
            .route(web::get().to(h::get_brand))
            .route(web::patch().to(h::update_brand))
            .route(web::delete().to(h::delete_brand)),
    )
    .service(
        web::resource("/brands/{brand_id}/logo")
            .route(web::put().to(h::upload_brand_logo))
            .route(web::delete().to(h::remove_brand_logo)),
    )
    .service(web::resource("/brands/{brand_id}/cards").route(web::post().to(h::create_card)))
    .service(web::resource("/cards").route(web::get().to(h::list_cards)))
    .service(
        web::resource("/cards/{card_id}")
            .route(web::get().to(h::get_card))
            .route(web::patch().to(h::update_card))
            .route(web::delete().to(h::delete_card)),
    )
    .service(
        web::resource("/models")
            .route(web::get().to(h::list_models))
            .route(web::post().to(h::create_model)),
    )
    .service(
        web::resource("/models/{model_id}")
            .route(web::get().to(h::get_model))
            .route(web::patch().to(h::update_model))
            .route(web::delete().to(h::delete_model)),
    )
    .service(
        web::resource("/models/{model_id}/logo")
            .route(web::put().to(h::upload_model_logo))
            .route(web::delete().to(h::remove_model_logo)),
    )
    .service(web::resource("/logos/{name}").route(web::get().to(h::get_logo)))
    .service(
        web::resource("/servers")
            .route(web::get().to(h::list_servers))
            .route(web::post().to(h::create_server)),
    )
    // Fixed words before `{server_id}`, which would otherwise claim them.
    .service(web::resource("/servers/check-all").route(web::post().to(ssh::check_all)))
    .service(web::resource("/servers/resources").route(web::post().to(ssh::many_resources)))
    .service(
        web::resource("/servers/{server_id}")
            .route(web::get().to(h::get_server))
            .route(web::patch().to(h::update_server))
            .route(web::delete().to(h::delete_server)),
    )
    .service(
        web::resource("/servers/{server_id}/join-token").route(web::post().to(h::issue_join_token)),
    )
    .service(
        web::resource("/servers/{server_id}/agent/approve").route(web::post().to(h::approve_agent)),
    )
    .service(
        web::resource("/servers/{server_id}/agent/health").route(web::get().to(h::agent_health)),
    )
    .service(
        web::resource("/servers/{server_id}/ssh")
            .route(web::get().to(ssh::get_ssh))
            .route(web::put().to(ssh::set_ssh))
            .route(web::delete().to(ssh::delete_ssh)),
    )
    .service(web::resource("/servers/{server_id}/ssh/repin").route(web::post().to(ssh::repin_ssh)))
    .service(
        web::resource("/servers/{server_id}/check")
            .route(web::get().to(ssh::last_check))
            .route(web::post().to(ssh::check_server)),
    )
    .service(
        web::resource("/servers/{server_id}/resources").route(web::get().to(ssh::server_resources)),
    )
    .service(
        web::resource("/servers/{server_id}/terminal-ticket")
            .route(web::post().to(ssh::terminal_ticket)),
    )
    .service(web::resource("/servers/{server_id}/terminal").route(web::get().to(ssh::terminal)))
    .service(
        web::resource("/tasks")
            .route(web::get().to(tasks::list_tasks))
            .route(web::post().to(tasks::create_task)),
    )
    .service(
        web::resource("/tasks/{task_id}")
            .route(web::get().to(tasks::get_task))
            .route(web::patch().to(tasks::update_task))
            .route(web::delete().to(tasks::delete_task)),
    )
    .service(web::resource("/tasks/{task_id}/run").route(web::post().to(tasks::run_task)))
    .service(web::resource("/tasks/{task_id}/runs").route(web::get().to(tasks::task_runs)))
    .service(web::resource("/tasks/{task_id}/runs/{run_id}").route(web::get().to(tasks::task_run)))
    .service(web::resource("/stats").route(web::get().to(h::stats)))
    .service(web::resource("/agents/join").route(web::post().to(node::join)))
    .service(web::resource("/nodes/{server_id}/heartbeat").route(web::post().to(node::heartbeat)))
    .service(web::resource("/nodes/{server_id}/report").route(web::put().to(node::report)))
    .service(
        web::resource("/nodes/{server_id}/assignments")
            .route(web::get().to(deployments::assignments)),
    )
    .service(
        web::resource("/nodes/{server_id}/instances")
            .route(web::put().to(deployments::report_instances)),
    )
    .service(
        web::resource("/deployments")
            .route(web::get().to(d::list_deployments))
            .route(web::post().to(d::create_deployment)),
    )
    .service(
        web::resource("/deployments/{deployment_id}")
            .route(web::get().to(d::get_deployment))
            .route(web::patch().to(d::update_deployment))
            .route(web::delete().to(d::delete_deployment)),
    )
    .service(
        web::resource("/deployments/{deployment_id}/replicas")
            .route(web::patch().to(d::scale_deployment)),
    )
    .service(
        web::resource("/deployments/{deployment_id}/start")
            .route(web::post().to(d::start_deployment)),
    )
    .service(
        web::resource("/deployments/{deployment_id}/stop")
            .route(web::post().to(d::stop_deployment)),
    )
    .service(
        web::resource("/deployments/{deployment_id}/restart")
            .route(web::post().to(d::restart_deployment)),
    )
    .service(
        web::resource("/deployments/{deployment_id}/events")
            .route(web::get().to(d::deployment_events)),
    )
    .service(
        web::resource("/deployments/{deployment_id}/instances")
            .route(web::get().to(d::deployment_instances)),
    )
    .service(
        web::resource("/deployments/{deployment_id}/instances/{instance_id}/logs")
            .route(web::get().to(d::instance_logs)),
    );
}
