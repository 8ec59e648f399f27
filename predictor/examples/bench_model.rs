//! Writes the benchmark's model: `bench_model DIR [VERSION]` creates `DIR/model.json` and
//! `DIR/report.json` (AdaBoost of 50 stumps over the wine features, the trainer's default shape).

#[path = "../tests/common/model.rs"]
mod model;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: bench_model DIR [VERSION]")?;
    let version = args.next().unwrap_or_else(|| "bench".to_string());
    model::write_model_dir(std::path::Path::new(&dir), &version, Some(0.78));
    println!("wrote {dir}/model.json");
    Ok(())
}
