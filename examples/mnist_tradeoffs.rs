//! The MNIST study of Soen & Sun, "Trade-Offs of Diagonal Fisher Information Matrix
//! Estimators" (NeurIPS 2024): train a sigmoid MLP (784-256-128-64-10 by default) on MNIST
//! and, at initialisation and after every epoch, compute per layer the FIM diagonal, the
//! exact variances of its estimators Î1/Î2 with N labels, their Theorem 4.1 upper bounds and
//! Monte-Carlo estimates, for a fixed random test input and averaged over a fixed set of 100
//! test inputs. Writes `curves.csv`, `figure1.png`, `figure1.svg` and `model.safetensors`.
//!
//! ```sh
//! cargo run --release --example mnist_tradeoffs                      # short default: 2 epochs
//! cargo run --release --example mnist_tradeoffs -- --epochs 20       # the paper's setting
//! cargo run --release --example mnist_tradeoffs -- --activation logsigmoid --layers 5  # App. E
//! ```
//!
//! Flags: `--epochs`, `--layers`, `--activation`, `--samples N`, `--seed`,
//! `--engine auto|cpu|gpu`, `--train-subset K`, `--out DIR` (see `--help`). The work is done
//! by `diagfim::train::study`. Errors print one message and exit with code 2.

use diagfim::train::study::{run, StudyConfig, USAGE};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match StudyConfig::from_args(&args) {
        Ok(Some(config)) => config,
        Ok(None) => {
            print!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&config, &mut |line| println!("{line}")) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
