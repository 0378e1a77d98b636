use clap::Parser as _;
use dockertrace::cli::{exit, Cli, Command};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // Usage errors exit with clap's code, exit::USAGE.
    let cli = Cli::parse();
    let result = match cli.command {
        None => dockertrace::cli::run::run(cli.run).map(|()| exit::OK),
        Some(Command::Trace(args)) => dockertrace::cli::trace::run(args).map(|()| exit::OK),
        Some(Command::Workload(cmd)) => dockertrace::workload::run(cmd).map(|()| exit::OK),
        Some(Command::Cleanup) => dockertrace::cli::cleanup::run().map(|()| exit::OK),
        Some(Command::Report(args)) => dockertrace::cli::offline::report(args).map(|()| exit::OK),
        Some(Command::Import(args)) => dockertrace::cli::offline::import(args).map(|()| exit::OK),
        Some(Command::Diff(args)) => dockertrace::cli::offline::diff(args),
    };
    let code = result.unwrap_or_else(|e| {
        eprintln!("dockertrace: error: {}", dockertrace::errors::describe(&e));
        exit::code_of(&e)
    });
    std::process::exit(code);
}
