use clap::Parser;

use beamops::exit::{Exit, exit_for};
use beamops::output::Format;

fn main() {
    // clap exits 2 on a usage error; in our table 2 means "changes pending", so bad input is 1.
    let cli = match beamops::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            let exit = if e.use_stderr() {
                Exit::Error
            } else {
                Exit::Ok
            };
            std::process::exit(exit.code());
        }
    };
    let format = cli.format;
    let code = match beamops::commands::run(cli) {
        Ok(exit) => exit,
        Err(err) => {
            let exit = exit_for(&err);
            if format == Format::Json {
                let report = serde_json::json!({
                    "error": format!("{err:#}"),
                    "exit": exit.code(),
                });
                println!("{report}");
            }
            eprintln!("{} {err:#}", console::style("error:").red().bold());
            exit
        }
    };
    std::process::exit(code.code());
}
