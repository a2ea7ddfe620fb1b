//! `tweedie`: diffusion-model image restoration from the command line.

mod bench;
mod calibrate;
mod commands;
mod eval;
mod evaluate;
mod model;
mod operator_args;
mod report;
mod restore;

use clap::Parser;

fn main() {
    let cli = commands::Cli::parse();
    if let Err(e) = commands::run(cli) {
        eprintln!("error: {}", commands::error_text(&e));
        std::process::exit(1);
    }
}
