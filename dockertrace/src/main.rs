use clap::Parser as _;
use dockertrace::cli::{Cli, Command};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => dockertrace::cli::run::run(cli.run),
        Some(Command::Trace(args)) => dockertrace::cli::trace::run(args),
        Some(Command::Workload(cmd)) => dockertrace::workload::run(cmd),
        Some(Command::Cleanup) => dockertrace::cli::cleanup::run(),
        Some(Command::Report(args)) => dockertrace::cli::offline::report(args),
        Some(Command::Import(args)) => dockertrace::cli::offline::import(args),
        Some(Command::Diff(args)) => match dockertrace::cli::offline::diff(args) {
            Ok(0) => Ok(()),
            Ok(code) => std::process::exit(code),
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        eprintln!("dockertrace: error: {}", dockertrace::errors::describe(&e));
        std::process::exit(1);
    }
}
