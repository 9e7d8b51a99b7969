//! The node's resources: CPU, memory and disks from `sysinfo`, GPUs from `nvidia-smi`.

use std::time::Duration;

use maas_model::contract::{DiskReport, GpuReport, NodeReport};
use sysinfo::{CpuRefreshKind, Disks, MemoryRefreshKind, RefreshKind, System};

/// The query the agent runs (argv, never a shell string).
const NVIDIA_SMI_ARGS: [&str; 2] = [
    "--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu,temperature.gpu",
    "--format=csv,noheader,nounits",
];

/// Takes samples; keeps the CPU counters between them (usage is a difference of two samples).
pub struct Sampler {
    system: System,
}

impl Sampler {
    /// A sampler whose first CPU figure covers the time since it was made.
    pub fn new() -> Self {
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        Self { system }
    }

    /// One report.
    pub async fn sample(&mut self) -> NodeReport {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let disks = Disks::new_with_refreshed_list()
            .list()
            .iter()
            .take(64)
            .map(|d| DiskReport {
                mount: d
                    .mount_point()
                    .to_string_lossy()
                    .chars()
                    .take(1024)
                    .collect(),
                total_bytes: d.total_space(),
                available_bytes: d.available_space().min(d.total_space()),
            })
            .filter(|d| !d.mount.is_empty())
            .collect();
        let usage = f64::from(self.system.global_cpu_usage());
        NodeReport {
            cpu_cores: u32::try_from(self.system.cpus().len()).unwrap_or(u32::MAX),
            cpu_usage_percent: if usage.is_finite() {
                usage.clamp(0.0, 100.0)
            } else {
                0.0
            },
            memory_total_bytes: self.system.total_memory(),
            memory_used_bytes: self.system.used_memory().min(self.system.total_memory()),
            disks,
            gpus: gpus().await,
        }
    }
}

/// The GPUs `nvidia-smi` lists (none when it is missing, fails or hangs).
async fn gpus() -> Vec<GpuReport> {
    let run = tokio::process::Command::new("nvidia-smi")
        .args(NVIDIA_SMI_ARGS)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(output)) if output.status.success() => {
            parse_nvidia_smi(&String::from_utf8_lossy(&output.stdout))
        }
        Ok(Ok(output)) => {
            tracing::warn!(status = %output.status, "nvidia-smi failed; reporting no GPUs");
            Vec::new()
        }
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "could not run nvidia-smi; reporting no GPUs");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!("nvidia-smi did not answer within 10 s; reporting no GPUs");
            Vec::new()
        }
    }
}

/// Parses `nvidia-smi --query-gpu=… --format=csv,noheader,nounits` (one GPU per line; `[N/A]`
/// where a figure is unknown). Lines that do not parse are skipped.
fn parse_nvidia_smi(text: &str) -> Vec<GpuReport> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let figure = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite());
    reader
        .records()
        .filter_map(Result::ok)
        .filter_map(|r| {
            let field = |i: usize| r.get(i).unwrap_or("");
            Some(GpuReport {
                index: field(0).parse().ok()?,
                uuid: field(1).chars().take(128).collect(),
                name: Some(field(2))
                    .filter(|n| !n.is_empty())?
                    .chars()
                    .take(128)
                    .collect(),
                memory_total_mib: field(3).parse().ok()?,
                memory_used_mib: field(4).parse().ok()?,
                utilization_percent: figure(field(5)).map(|v| v.clamp(0.0, 100.0)),
                temperature_c: figure(field(6)),
            })
        })
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_lines_become_gpus() {
        let text = "0, GPU-aaaa, NVIDIA H100 80GB HBM3, 81559, 1024, 37, 41\n1, GPU-bbbb, NVIDIA H100 80GB HBM3, 81559, 0, [N/A], [N/A]\ngarbage\n";
        let gpus = parse_nvidia_smi(text);
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(
            (gpus[0].memory_total_mib, gpus[0].memory_used_mib),
            (81_559, 1024)
        );
        assert_eq!(gpus[0].utilization_percent, Some(37.0));
        assert_eq!(gpus[1].utilization_percent, None);
        assert_eq!(gpus[1].temperature_c, None);
    }
}
