//! The node liveness queue's handler (its schedule is in [`crate::schedule`]).

use apalis::prelude::{BoxDynError, Data};
use maas_model::app::nodes::NodeService;
use maas_model::jobs::NodeLivenessJob;

/// Grades every joined node by its last heartbeat. Idempotent: a second run changes nothing.
pub(crate) async fn sweep(
    job: NodeLivenessJob,
    nodes: Data<NodeService>,
) -> Result<(), BoxDynError> {
    let swept = nodes.sweep().await?;
    if swept.changed > 0 {
        tracing::info!(
            checked = swept.checked,
            changed = swept.changed,
            tick = job.tick,
            "node liveness sweep ran"
        );
    } else {
        tracing::debug!(
            checked = swept.checked,
            tick = job.tick,
            "node liveness sweep ran"
        );
    }
    Ok(())
}
