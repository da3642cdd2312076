use clap::Parser;

use beamops::exit::exit_for;
use beamops::output::Format;

fn main() {
    let cli = beamops::cli::Cli::parse();
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
