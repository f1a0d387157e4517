//! `switchyard`: parse the command line, load the configuration, run.
//!
//! Exit codes: 0 clean exit, 1 invalid configuration or arguments, 2 failure
//! to start.

use clap::Parser;

/// pingora allocates per request; mimalloc serves that faster than glibc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;
use switchyard::cli::{Args, EXIT_CONFIG};

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();

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
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    switchyard::server::run(&args, config, args.config_path())
}
