//! `cargo run --release -p earlyexit-data --example verify -- DIR`: recognise and check the datasets
//! in DIR (what `earlyexit data verify --data-dir DIR` prints). Exits 1 if a check fails.

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "../shared/data".into());
    match earlyexit_data::verify(std::path::Path::new(&dir)) {
        Ok(report) => {
            println!("{report}");
            if !report.ok() {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
