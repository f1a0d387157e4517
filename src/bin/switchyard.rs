//! `switchyard`: parse the command line, load the configuration, run.
//!
//! Exit codes: 0 clean exit, 1 invalid configuration or arguments, 2 failure
//! to start.

use clap::Parser;

/// pingora allocates per request; mimalloc serves that faster than glibc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;
use switchyard::cli::{Args, EXIT_CONFIG, EXIT_START};
use switchyard::log_output::{ErrorLogWriter, Sink, ERROR};

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // The error log (ours and pingora's) goes through a queue with a writer
    // thread of its own: a stalled stderr drops lines, it never blocks.
    ERROR.reopen(Sink::Stderr);
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    logger
        .format_timestamp_millis()
        .target(env_logger::Target::Pipe(Box::new(ErrorLogWriter)));
    if std::io::stderr().is_terminal() {
        logger.write_style(env_logger::WriteStyle::Always);
    }
    logger.init();
    let code = run(&args);
    ERROR.flush(Duration::from_secs(1));
    code
}

fn run(args: &Args) -> ExitCode {
    let config = match args.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            if args.test {
                eprintln!("configuration invalid");
                return ExitCode::from(EXIT_CONFIG);
            }
            // at start, unusable certificate files are a failure to start
            // (exit 2); `-t` reports them as configuration errors (exit 1)
            if !e.errors.is_empty() && e.errors.iter().all(|x| x.path.contains(".tls.")) {
                return ExitCode::from(switchyard::cli::EXIT_START);
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(key) = &args.show {
        return match switchyard::cli::show(&config, key) {
            Ok(v) => {
                println!("{v}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    if args.test {
        let report = switchyard::startup::check(&config);
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        for e in &report.errors {
            eprintln!("{e}");
        }
        if !report.errors.is_empty() {
            eprintln!("configuration invalid");
            return ExitCode::from(EXIT_CONFIG);
        }
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    let prepared = match switchyard::startup::prepare(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(EXIT_START);
        }
    };
    switchyard::server::run(args, prepared, args.config_path())
}
