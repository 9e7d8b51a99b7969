//! The deploy queue's and the status sync's handlers (the sync's schedule is in
//! [`crate::schedule`]).

use apalis::prelude::{BoxDynError, Data};
use maas_model::app::deployer::Deployer;
use maas_model::domain::deployment::DeploymentId;
use maas_model::jobs::{DeployJob, StatusSyncJob};

/// One step of a deployment; the deployer enqueues the next look itself.
pub(crate) async fn deploy(job: DeployJob, deployer: Data<Deployer>) -> Result<(), BoxDynError> {
    let next = deployer
        .run(
            DeploymentId::from_uuid(job.deployment_id),
            job.action,
            job.attempt,
        )
        .await?;
    tracing::debug!(deployment.id = %job.deployment_id, ?next, "deploy step ran");
    Ok(())
}

/// Desired vs reported state of every deployment.
pub(crate) async fn sync(job: StatusSyncJob, deployer: Data<Deployer>) -> Result<(), BoxDynError> {
    let synced = deployer.sync().await?;
    if synced.lost > 0 {
        tracing::info!(
            lost = synced.lost,
            enqueued = synced.enqueued,
            tick = job.tick,
            "status sync placed lost replicas again"
        );
    } else {
        tracing::debug!(
            enqueued = synced.enqueued,
            tick = job.tick,
            "status sync ran"
        );
    }
    Ok(())
}
