//! `trainer-job`: the image the champion operator runs as a Job. See `trainer-job --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use champion_model::MetricName;
use champion_model::trainer_cli::{self, flag};
use clap::{Args, Parser, Subcommand};
use trainer_job::algorithms::params::parse_param_items;
use trainer_job::{Algorithm, ReadOptions, TrainConfig, TrainError, dataset, train};

const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";

#[derive(Parser)]
#[command(
    name = "trainer-job",
    version,
    about = "Train a champion challenger from CSV objects in a bucket"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read the data, fit, score challenger and champion, write model.json and report.json.
    #[command(name = trainer_cli::TRAIN)]
    Train(Box<TrainArgs>),
    /// Write a demo data set as CSV slots.
    Dataset {
        #[command(subcommand)]
        set: DatasetCommand,
    },
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// The red-wine quality set shipped by linfa-datasets, as N slots plus a test CSV.
    Wine {
        #[arg(long, default_value_t = 2)]
        slots: usize,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
struct TrainArgs {
    /// Prefix (or single object) holding the CSV data: file:///, s3://, gs://, az://, http(s)://.
    #[arg(long = flag::DATA_URI, env = "DATA_URI")]
    data_uri: String,
    /// Version directory to write model.json and report.json to; its last segment is the version.
    #[arg(long = flag::MODEL_URI, env = "MODEL_URI")]
    model_uri: String,
    /// Version directory of the current champion, scored on the same holdout.
    #[arg(long = flag::CHAMPION_URI, env = "CHAMPION_URI")]
    champion_uri: Option<String>,
    /// Fixed holdout data; its rows never train.
    #[arg(long = flag::TEST_DATA_URI, env = "TEST_DATA_URI")]
    test_data_uri: Option<String>,
    /// Target column (case, spaces and underscores do not matter).
    #[arg(long = flag::TARGET, env = "TARGET")]
    target: String,
    /// Binarise the target: class "1" when above this value, "0" otherwise.
    #[arg(long = flag::POSITIVE_ABOVE, env = "POSITIVE_ABOVE", allow_negative_numbers = true)]
    positive_above: Option<f64>,
    /// Columns to ignore (repeat or comma-separate).
    #[arg(long = flag::DROP, env = "DROP", value_delimiter = ',')]
    drop: Vec<String>,
    /// Metric the scores are in: f1Macro, f1Weighted, f1Binary, accuracy.
    #[arg(long = flag::METRIC, env = "METRIC", default_value = "f1Macro")]
    metric: String,
    #[arg(long = flag::HOLDOUT_FRACTION, env = "HOLDOUT_FRACTION", default_value_t = 0.2)]
    holdout_fraction: f64,
    #[arg(long = flag::SEED, env = "SEED", default_value_t = 42)]
    seed: u64,
    /// adaboost, logistic, random-forest or gaussian-nb.
    #[arg(long = flag::ALGORITHM, env = "ALGORITHM", default_value = "adaboost")]
    algorithm: String,
    /// Hyper-parameter key=value (repeat, or comma-separate in PARAMS).
    #[arg(long = flag::PARAM, env = "PARAMS", value_delimiter = ',')]
    params: Vec<String>,
    /// Skip and count bad rows instead of failing.
    #[arg(long, env = "SKIP_BAD_ROWS", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    skip_bad_rows: bool,
    /// Where Kubernetes reads the termination message from.
    #[arg(long = flag::TERMINATION_LOG, env = "TERMINATION_LOG", default_value = DEFAULT_TERMINATION_LOG)]
    termination_log: PathBuf,
}

impl TrainArgs {
    fn config(&self) -> Result<TrainConfig, TrainError> {
        Ok(TrainConfig {
            data_uri: self.data_uri.clone(),
            model_uri: self.model_uri.clone(),
            champion_uri: self.champion_uri.clone().filter(|s| !s.trim().is_empty()),
            test_data_uri: self.test_data_uri.clone().filter(|s| !s.trim().is_empty()),
            read: ReadOptions {
                target: self.target.clone(),
                positive_above: self.positive_above,
                drop: self.drop.clone(),
                skip_bad_rows: self.skip_bad_rows,
            },
            metric: self
                .metric
                .parse::<MetricName>()
                .map_err(|e| TrainError::Config(e.to_string()))?,
            holdout_fraction: self.holdout_fraction,
            seed: self.seed,
            algorithm: self.algorithm.parse::<Algorithm>()?,
            params: parse_param_items(&self.params)?,
        })
    }
}

/// Writes the termination message; failing to is logged, never fatal (outside Kubernetes the
/// default path usually does not exist).
fn write_termination_log(path: &PathBuf, message: &str) {
    if let Err(e) = std::fs::write(path, message) {
        tracing::debug!(path = %path.display(), error = %e, "could not write the termination log");
    }
}

/// Where to report a command line that did not parse: `--termination-log` if it is among the
/// arguments, else TERMINATION_LOG, else the Kubernetes default.
fn termination_log_before_parsing() -> PathBuf {
    let args: Vec<String> = std::env::args().collect();
    for (i, arg) in args.iter().enumerate() {
        let long = trainer_cli::long(flag::TERMINATION_LOG);
        if let Some(v) = arg.strip_prefix(&format!("{long}=")) {
            return PathBuf::from(v);
        }
        if *arg == long
            && let Some(v) = args.get(i + 1)
        {
            return PathBuf::from(v);
        }
    }
    PathBuf::from(
        std::env::var("TERMINATION_LOG").unwrap_or_else(|_| DEFAULT_TERMINATION_LOG.to_string()),
    )
}

/// One line: Kubernetes shows the termination message in `kubectl describe`, and a multi-line
/// message is cut.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Installs the log subscriber on stderr. `LOG_FORMAT=json` or `text` chooses; unset, the logs
/// are JSON unless stderr is a terminal, so a trainer pod's lines are JSON by default. A JSON
/// line is flat: `timestamp`, `level`, `message`, `target` and the event's fields at the top
/// level.
fn init_logging() {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let json = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !terminal,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(terminal)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        );
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            print!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's usage block follows the reason; the reason is what the log needs.
            let text = e.to_string();
            let message = one_line(text.split("Usage:").next().unwrap_or(&text));
            eprint!("{e}");
            write_termination_log(&termination_log_before_parsing(), &message);
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Dataset {
            set: DatasetCommand::Wine { slots, out },
        } => match dataset::write_wine_slots(slots, &out) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}", one_line(&e.to_string()));
                ExitCode::FAILURE
            }
        },
        Command::Train(args) => {
            let result = args.config().and_then(|config| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| TrainError::Config(format!("cannot start the runtime: {e}")))?;
                runtime.block_on(train(&config))
            });
            match result {
                Ok(outcome) => {
                    let r = &outcome.report;
                    let summary = serde_json::json!({
                        "version": r.model_version,
                        "metric": r.metric,
                        "challengerScore": r.challenger_score,
                        "championScore": r.champion_score,
                        "championVersion": r.champion_version,
                    });
                    println!("{summary}");
                    write_termination_log(&args.termination_log, &summary.to_string());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let message = one_line(&e.to_string());
                    eprintln!("{message}");
                    write_termination_log(&args.termination_log, &message);
                    ExitCode::FAILURE
                }
            }
        }
    }
}
