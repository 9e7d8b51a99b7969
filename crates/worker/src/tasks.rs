//! The remote tasks' tick (its schedule is in [`crate::schedule`]) and run handlers.

use apalis::prelude::{BoxDynError, Data};
use maas_model::app::tasks::TaskService;
use maas_model::domain::task::RunId;
use maas_model::jobs::{RemoteTaskJob, TaskTickJob};

/// Fires the tasks that are due.
pub(crate) async fn tick(job: TaskTickJob, tasks: Data<TaskService>) -> Result<(), BoxDynError> {
    let fired = tasks.tick().await?;
    if fired.runs > 0 || fired.requeued > 0 {
        tracing::info!(
            tick = job.tick,
            tasks = fired.tasks,
            runs = fired.runs,
            requeued = fired.requeued,
            "remote tasks fired"
        );
    }
    Ok(())
}

/// Runs one run of a task.
pub(crate) async fn run(job: RemoteTaskJob, tasks: Data<TaskService>) -> Result<(), BoxDynError> {
    let state = tasks.execute(RunId::from_uuid(job.run_id)).await?;
    tracing::info!(run.id = %job.run_id, state = ?state, "remote task run ended");
    Ok(())
}
