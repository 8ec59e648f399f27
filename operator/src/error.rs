//! Errors of one reconcile, one variant per step that can fail. [`Error::category`] is the
//! bounded `result` label of `champion_reconciles_total` and the `category` field of the log
//! line the error policy writes.

/// A failed reconcile step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ModelPipeline {0} has no namespace")]
    MissingNamespace(String),
    #[error("reading the credentials Secret {name}: {source}")]
    ReadSecret {
        name: String,
        source: Box<kube::Error>,
    },
    #[error("reading ModelPipeline {name}: {source}")]
    ReadPipeline {
        name: String,
        source: Box<kube::Error>,
    },
    #[error("reading trainer Job {name}: {source}")]
    ReadJob {
        name: String,
        source: Box<kube::Error>,
    },
    #[error("applying trainer Job {name}: {source}")]
    ApplyJob {
        name: String,
        source: Box<kube::Error>,
    },
    #[error("applying predictor Deployment {name}: {source}")]
    ApplyDeployment {
        name: String,
        source: Box<kube::Error>,
    },
    #[error("applying predictor Service {name}: {source}")]
    ApplyService {
        name: String,
        source: Box<kube::Error>,
    },
    #[error("not writing {what}: this replica no longer holds the leader Lease")]
    NotLeader { what: String },
    #[error("writing the status of ModelPipeline {name}: {source}")]
    PatchStatus {
        name: String,
        source: Box<kube::Error>,
    },
}

impl Error {
    /// The bounded category used in metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::MissingNamespace(_) => "missing_namespace",
            Error::ReadSecret { .. } => "read_secret",
            Error::ReadPipeline { .. } => "read_pipeline",
            Error::ReadJob { .. } => "read_job",
            Error::ApplyJob { .. } => "apply_job",
            Error::ApplyDeployment { .. } => "apply_deployment",
            Error::ApplyService { .. } => "apply_service",
            Error::NotLeader { .. } => "not_leader",
            Error::PatchStatus { .. } => "patch_status",
        }
    }
}
