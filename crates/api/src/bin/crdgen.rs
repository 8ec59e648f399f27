//! Prints the ModelPipeline CustomResourceDefinition as YAML (`make crds` writes it to
//! `crds/modelpipelines.champion.dev.yaml`).

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match champion_api::crd_yaml() {
        Ok(yaml) => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(yaml.as_bytes()).and_then(|()| out.flush()) {
                eprintln!("crdgen: writing the CRD to stdout failed: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}
