//! The only step that reads the world: a fresh copy of the pipeline, its Jobs and Deployment
//! (from the controller's caches, and the API server when the Job cache lags), store
//! credentials, the data listing, the finished run's report.json and a failed pod's
//! termination message. [`observe`] returns all of it as one [`Observed`] value of small,
//! plain views, with the store's failures as typed values, so `decide` stays pure.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::caches::Caches;
use champion_api::{
    ChallengerState, LABEL_COMPONENT, LABEL_MODEL_VERSION, LABEL_PIPELINE, ModelPipeline, SecretRef,
};
use champion_model::{REPORT_FILE_NAME, Report};
use champion_store::{Store, StoreError, TenantStores, fingerprint};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::ObjectRef;

use crate::context::Context;
use crate::error::Error;
use crate::listings::Listed;
use crate::names::{COMPONENT_PREDICTOR, label_value, predictor_name};
use crate::views::{
    DataListing, DeploymentView, JobState, JobView, ReadFailure, RolloutState, deployment_view,
    job_view,
};

/// Everything `decide` needs to know about the world.
#[derive(Clone, Debug)]
pub struct Observed {
    pub now: Timestamp,
    /// None when the data was not listed (suspended pipeline, or a run is in flight).
    pub data: Option<Result<DataListing, ReadFailure>>,
    pub jobs: Vec<JobView>,
    pub deployment: Option<DeploymentView>,
    /// How many more runs may start operator-wide (None: no limit).
    pub run_slots: Option<usize>,
    /// The tracked run's report.json, read once its Job completed.
    pub report: Option<Result<Report, ReadFailure>>,
    /// The trainer's own one-line reason, when the tracked run's Job failed and left one.
    pub termination_message: Option<String>,
    /// What the pipeline asks for that the operator's pod policy does not allow.
    pub policy_violation: Option<String>,
    /// The data listing is still running (`data` is None): look again soon.
    pub listing_pending: bool,
    /// Why a predictor pod of the version being rolled out failed, in its own words (its
    /// termination message, e.g. `refusing to serve …`), read once the rollout has stalled.
    pub predictor_failure: Option<String>,
    /// Live analysis (canary or shadow): the challenger Deployment and the step's figures.
    pub live: Option<crate::live::LiveObserved>,
    /// The champion's live input drift, when this reconcile read it ([`crate::drift`]).
    pub drift: Option<crate::drift::Reading>,
}

/// Reads everything one reconcile of `mp` needs, in one place: `None` when the pipeline is
/// gone. Only what the status says can matter is read: the data is not listed while a run or
/// a rollout is in flight, and a report only once the tracked Job completed.
pub async fn observe(
    ctx: &Context,
    mp: Arc<ModelPipeline>,
) -> Result<Option<(Arc<ModelPipeline>, Observed)>, Error> {
    let ns = mp
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(mp.name_any()))?;
    let Some(mp) = fresh_copy(ctx, &ns, mp).await? else {
        return Ok(None);
    };
    let now = Timestamp::now();
    let status = mp.status.clone().unwrap_or_default();
    let tracked = status
        .challenger
        .as_ref()
        .filter(|c| c.state == ChallengerState::Training);
    let busy = status.rollout.is_some() || tracked.is_some();

    let mut listing_pending = false;
    let data = if mp.spec.suspend || busy {
        None
    } else {
        // The listing runs as its own task (see [`crate::listings`]): a store that never
        // answers costs this reconcile at most the wait, not a slot for the store timeout.
        let data = &mp.spec.data;
        let what = format!(
            "{}\0{}",
            data.uri,
            data.secret_ref.as_ref().map_or("", |s| s.name.as_str())
        );
        let start = {
            let (client, ns, uri) = (ctx.client.clone(), ns.clone(), data.uri.clone());
            let (secret, stores) = (data.secret_ref.clone(), ctx.stores.clone());
            move || async move { list_with_secret(&client, &ns, secret.as_ref(), &stores, &uri).await }
        };
        match ctx
            .listings
            .list(
                (ns.clone(), mp.name_any()),
                &what,
                crate::listings::WAIT,
                start,
            )
            .await
        {
            Listed::Done(result) => Some(result),
            Listed::Pending => {
                listing_pending = true;
                None
            }
        }
    };

    let mut jobs = jobs_of(&ctx.jobs, &mp);
    if let Some(c) = tracked
        && !jobs.iter().any(|j| j.name == c.job)
    {
        // The Job watch may not have delivered a Job created a moment ago; ask the API server
        // before concluding that the run vanished.
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        let job = api.get_opt(&c.job).await.map_err(|source| Error::ReadJob {
            name: c.job.clone(),
            source: Box::new(source),
        })?;
        jobs.extend(job.as_ref().and_then(job_view));
    }

    let mut report = None;
    let mut termination = None;
    let finished = tracked
        .filter(|_| !mp.spec.suspend && status.rollout.is_none())
        .and_then(|c| Some((c, &jobs.iter().find(|j| j.name == c.job)?.state)));
    match finished {
        Some((c, JobState::Complete)) => {
            let opts =
                secret_options(&ctx.client, &ns, mp.spec.model_store.secret_ref.as_ref()).await?;
            report = Some(read_report(&ctx.stores, &mp.model_uri(&c.version), opts).await);
        }
        Some((c, JobState::Failed(_))) => {
            termination = termination_message(&ctx.client, &ns, &c.job).await;
        }
        _ => {}
    }

    let deployment = deployment_of(&ctx.deployments, &mp);
    let mut predictor_failure = None;
    if let (
        Some(rollout),
        Some(DeploymentView {
            rollout: RolloutState::Failed { .. },
            ..
        }),
    ) = (status.rollout.as_ref(), deployment.as_ref())
    {
        let selector = format!(
            "{}={},{}={},{}={}",
            LABEL_PIPELINE,
            label_value(&mp.name_any()),
            LABEL_COMPONENT,
            COMPONENT_PREDICTOR,
            LABEL_MODEL_VERSION,
            label_value(&rollout.version)
        );
        predictor_failure = failed_container_message(&ctx.client, &ns, &selector).await;
    }

    let drift = crate::drift::read(ctx, &mp, &status).await;
    let observed = Observed {
        now,
        data,
        jobs,
        deployment,
        run_slots: ctx.runs.free(&ctx.jobs),
        report,
        termination_message: termination,
        policy_violation: ctx.policy.check(&mp).err(),
        listing_pending,
        predictor_failure,
        live: crate::live::observe(ctx, &mp).await,
        drift,
    };
    Ok(Some((mp, observed)))
}

/// `mp` itself when the cache is up to date, else the API server's copy; `None` when the
/// pipeline is gone (see [`crate::freshness::Freshness`]).
async fn fresh_copy(
    ctx: &Context,
    ns: &str,
    mp: Arc<ModelPipeline>,
) -> Result<Option<Arc<ModelPipeline>>, Error> {
    if !ctx.fresh.is_stale(&mp) {
        return Ok(Some(mp));
    }
    let api: Api<ModelPipeline> = Api::namespaced(ctx.client.clone(), ns);
    let name = mp.name_any();
    match api.get_opt(&name).await {
        Ok(Some(current)) => {
            ctx.fresh.saw(&current);
            Ok(Some(Arc::new(current)))
        }
        Ok(None) => {
            ctx.fresh.forget(&mp);
            Ok(None)
        }
        Err(source) => Err(Error::ReadPipeline {
            name,
            source: Box::new(source),
        }),
    }
}

/// The pipeline's trainer Jobs, from the controller's cache.
pub fn jobs_of(cache: &Caches<Job>, mp: &ModelPipeline) -> Vec<JobView> {
    let ns = mp.metadata.namespace.as_deref();
    let name = label_value(mp.metadata.name.as_deref().unwrap_or_default());
    let uid = mp.metadata.uid.as_deref();
    let mut jobs: Vec<JobView> = cache
        .state()
        .iter()
        .filter(|j| j.metadata.namespace.as_deref() == ns)
        .filter(|j| {
            j.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_PIPELINE))
                == Some(&name)
        })
        .filter(|j| {
            j.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(o.uid.as_str()) == uid)
        })
        .filter_map(|j| job_view(j))
        .collect();
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    jobs
}

/// The pipeline's predictor Deployment, from the controller's cache.
pub fn deployment_of(cache: &Caches<Deployment>, mp: &ModelPipeline) -> Option<DeploymentView> {
    let ns = mp.metadata.namespace.clone().unwrap_or_default();
    let name = predictor_name(mp.metadata.name.as_deref().unwrap_or_default());
    cache
        .get(&ObjectRef::new(&name).within(&ns))
        .map(|d| deployment_view(&d))
}

/// What went wrong reading a Secret, in the words a pipeline author needs.
fn secret_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if status.code == 404 => "it does not exist".to_string(),
        kube::Error::Api(status) if status.code == 403 => {
            "the operator may not read it (forbidden)".to_string()
        }
        e => e.to_string(),
    }
}

/// The key/value pairs of a credentials Secret. Values never leave this process except as
/// store options; they are not logged.
pub async fn secret_options(
    client: &kube::Client,
    ns: &str,
    secret: Option<&SecretRef>,
) -> Result<Vec<(String, String)>, Error> {
    let Some(secret) = secret else {
        return Ok(Vec::new());
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = api
        .get(&secret.name)
        .await
        .map_err(|source| Error::ReadSecret {
            name: secret.name.clone(),
            source: Box::new(source),
        })?;
    let mut out = BTreeMap::new();
    for (k, v) in s.data.unwrap_or_default() {
        if let Ok(v) = String::from_utf8(v.0) {
            out.insert(k, v);
        }
    }
    for (k, v) in s.string_data.unwrap_or_default() {
        out.insert(k, v);
    }
    Ok(out.into_iter().collect())
}

/// The most objects a data listing reads: a prefix with more is reported, not collected.
pub const MAX_LISTED_OBJECTS: usize = 10_000;
/// The largest report.json the operator reads (real ones are a few KiB).
pub const MAX_REPORT_BYTES: u64 = 1024 * 1024;
/// How long one store call inside a reconcile may take: a store that never answers costs a
/// pipeline this much, not a reconcile slot forever.
pub const STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs one store call with [`STORE_TIMEOUT`].
async fn bounded<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, ReadFailure>>,
) -> Result<T, ReadFailure> {
    match tokio::time::timeout(STORE_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(ReadFailure::Fetch(format!(
            "{what} did not answer within {}s",
            STORE_TIMEOUT.as_secs()
        ))),
    }
}

/// Opens `uri` (the pipeline's `field`) with options from the pipeline's Secret, as far as the
/// operator's store policy lets a pipeline author: a refusal is a policy violation, anything
/// else a store that could not be opened. Host names are resolved within [`STORE_TIMEOUT`].
async fn open(
    stores: &TenantStores,
    uri: &str,
    options: Vec<(String, String)>,
    field: &str,
) -> Result<Store, ReadFailure> {
    let opened = async {
        Ok(stores.open(uri, options, field).await.map_err(|e| match e {
            StoreError::OptionNotAllowed { .. }
            | StoreError::HostRefused { .. }
            | StoreError::OutsideRoot { .. } => ReadFailure::Refused(e.to_string()),
            e => ReadFailure::OpenStore(e.to_string()),
        }))
    };
    bounded(&format!("opening {field}"), opened).await?
}

/// Reads the pipeline's data Secret and lists its data: the whole of one listing task. A
/// missing or forbidden Secret is the author's to fix: it shows in the status as the reason
/// the data cannot be listed, not only in the operator's log.
async fn list_with_secret(
    client: &kube::Client,
    ns: &str,
    secret: Option<&SecretRef>,
    stores: &TenantStores,
    uri: &str,
) -> Result<DataListing, ReadFailure> {
    match secret_options(client, ns, secret).await {
        Ok(opts) => list_data(stores, uri, opts).await,
        Err(Error::ReadSecret { name, source }) => Err(ReadFailure::Secret(format!(
            "reading the credentials Secret {name} of spec.data.secretRef: {}",
            secret_error(&source)
        ))),
        Err(e) => Err(ReadFailure::Secret(e.to_string())),
    }
}

/// Lists the data prefix and fingerprints it. The store redacts credentials from its errors,
/// so their text can go to the status.
pub async fn list_data(
    stores: &TenantStores,
    uri: &str,
    options: Vec<(String, String)>,
) -> Result<DataListing, ReadFailure> {
    let store = open(stores, uri, options, "spec.data.uri").await?;
    let listing = async { Ok(store.list_at_most(MAX_LISTED_OBJECTS).await) };
    let objects = match bounded(&format!("listing {}", store.uri()), listing).await? {
        Ok(objects) => objects,
        // A prefix that does not exist yet holds no data, as an empty bucket prefix does.
        Err(StoreError::NotFound { .. }) => Vec::new(),
        Err(e @ StoreError::OutsideRoot { .. }) => return Err(ReadFailure::Refused(e.to_string())),
        Err(e) => return Err(ReadFailure::List(e.to_string())),
    };
    Ok(DataListing {
        fingerprint: fingerprint(&objects),
        objects: objects.len(),
    })
}

/// Reads `<version dir>/report.json`; `Err` says why it is missing or unreadable.
pub async fn read_report(
    stores: &TenantStores,
    model_uri: &str,
    options: Vec<(String, String)>,
) -> Result<Report, ReadFailure> {
    let store = open(stores, model_uri, options, "spec.modelStore.uri").await?;
    let read = async {
        store
            .get_capped(REPORT_FILE_NAME, MAX_REPORT_BYTES)
            .await
            .map_err(|e| ReadFailure::Fetch(e.to_string()))
    };
    let bytes = bounded(&format!("reading {model_uri}{REPORT_FILE_NAME}"), read).await?;
    Report::from_json(&bytes)
        .map_err(|e| ReadFailure::Parse(format!("{model_uri}{REPORT_FILE_NAME}: {e}")))
}

/// The termination message of a failed trainer pod (the trainer's one-line reason), if any.
pub async fn termination_message(client: &kube::Client, ns: &str, job: &str) -> Option<String> {
    failed_container_message(client, ns, &format!("batch.kubernetes.io/job-name={job}")).await
}

/// The longest a container's termination message is carried into status (the kubelet caps
/// it at 4096 bytes; a reason that long helps nobody in `kubectl describe`).
const MAX_TERMINATION_MESSAGE: usize = 1024;

/// The termination message a failed container of the pods matching `selector` left, from its
/// current state or, for a container in a crash loop, the last one. The text is the pod's, so
/// it is cut to a bounded length and stripped of control characters before it reaches status.
async fn failed_container_message(
    client: &kube::Client,
    ns: &str,
    selector: &str,
) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .ok()?;
    list.items
        .iter()
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .flat_map(|cs| {
            let now = cs.state.as_ref().and_then(|s| s.terminated.as_ref());
            let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            now.into_iter().chain(last)
        })
        .filter(|t| t.exit_code != 0)
        .filter_map(|t| t.message.as_deref().map(clean_message))
        .find(|m| !m.is_empty())
}

/// A pod's own text, made safe to show: control characters become spaces, the length is bounded.
fn clean_message(m: &str) -> String {
    let cleaned: String = m
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match cleaned.char_indices().nth(MAX_TERMINATION_MESSAGE) {
        Some((cut, _)) => format!("{}…", &cleaned[..cut]),
        None => cleaned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_message_is_bounded_and_has_no_control_characters() {
        assert_eq!(
            clean_message("  refusing to serve\nmodel.json\u{1b}[31m \n"),
            "refusing to serve model.json [31m"
        );
        let long = "x".repeat(5000);
        let cut = clean_message(&long);
        assert_eq!(cut.chars().count(), MAX_TERMINATION_MESSAGE + 1);
        assert!(cut.ends_with('…'));
    }

    fn stores() -> TenantStores {
        TenantStores {
            local_roots: vec![std::env::temp_dir()],
            ..TenantStores::default()
        }
    }

    #[tokio::test]
    async fn listing_fingerprints_the_data_and_a_missing_prefix_is_empty() {
        let stores = stores();
        let dir = tempfile::tempdir().expect("tempdir");
        let uri = format!("file://{}/data/", dir.path().display());
        let empty = list_data(&stores, &uri, Vec::new())
            .await
            .expect("a missing prefix lists as empty");
        assert_eq!(empty.objects, 0);
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        std::fs::write(dir.path().join("data/a.csv"), "x,y\n1,2\n").expect("csv");
        let one = list_data(&stores, &uri, Vec::new()).await.expect("listing");
        assert_eq!(one.objects, 1);
        assert_ne!(one.fingerprint, empty.fingerprint);
        std::fs::write(dir.path().join("data/b.csv"), "x,y\n3,4\n").expect("csv");
        let two = list_data(&stores, &uri, Vec::new()).await.expect("listing");
        assert_ne!(
            two.fingerprint, one.fingerprint,
            "new data changes the fingerprint"
        );
        assert_eq!(
            list_data(&stores, &uri, Vec::new()).await.expect("listing"),
            two,
            "same data, same fingerprint"
        );
    }
}
