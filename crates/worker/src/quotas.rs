//! The reservation sweeper's handler (its schedule is in [`crate::schedule`]).

use apalis::prelude::{BoxDynError, Data};
use maas_user::app::quotas::QuotaService;
use maas_user::jobs::ReservationSweepJob;

/// Releases reservations past their deadline. Idempotent: each is released once.
pub(crate) async fn sweep(
    job: ReservationSweepJob,
    quotas: Data<QuotaService>,
) -> Result<(), BoxDynError> {
    let released = quotas.sweep_reservations().await?;
    if released > 0 {
        tracing::info!(
            released,
            tick = job.tick,
            "reservation sweep released reservations"
        );
    } else {
        tracing::debug!(
            tick = job.tick,
            "reservation sweep found nothing to release"
        );
    }
    Ok(())
}
