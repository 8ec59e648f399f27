//! What a reconcile step does to the world, as data: the objects to apply, the Events to send
//! and the metrics to count. [`crate::transition`] produces them without touching anything;
//! [`crate::apply`] and [`crate::record`] carry them out.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;

use crate::events::EventSpec;
use crate::metrics::MetricEvent;

/// An object the operator wants to exist exactly so (server-side apply).
#[derive(Clone, Debug, PartialEq)]
pub enum Desired {
    /// A trainer Job: takes one of the operator-wide run slots.
    Job(Box<Job>),
    Deployment(Box<Deployment>),
    Service(Box<Service>),
}

impl Desired {
    /// "Job <name>", "Deployment <name>" or "Service <name>", for messages.
    pub fn describe(&self) -> String {
        let (kind, name) = match self {
            Desired::Job(o) => ("Job", o.metadata.name.as_deref()),
            Desired::Deployment(o) => ("Deployment", o.metadata.name.as_deref()),
            Desired::Service(o) => ("Service", o.metadata.name.as_deref()),
        };
        format!("{kind} {}", name.unwrap_or_default())
    }
}

/// Everything one step changes besides the status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Effects {
    /// Applied in order, before the status is written.
    pub objects: Vec<Desired>,
    /// Sent after the status was written.
    pub events: Vec<EventSpec>,
    /// Counted after the status was written.
    pub metrics: Vec<MetricEvent>,
    /// When to look at the pipeline again if nothing else wakes it.
    pub requeue: Duration,
}

impl Effects {
    /// Whether the step (re)applies the predictor Deployment from the current spec.
    pub fn applies_predictor(&self) -> bool {
        self.objects
            .iter()
            .any(|o| matches!(o, Desired::Deployment(_)))
    }
}
