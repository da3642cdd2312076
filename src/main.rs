use beamops::exit::{Exit, exit_for};
use beamops::output::{self, Format};

fn main() {
    output::quiet_on_closed_pipes();
    // A shell asking for completions (the function `beamops completions <shell>` registered).
    clap_complete::CompleteEnv::with_factory(beamops::cli::command_for_completions)
        .var(beamops::complete::VAR)
        .complete();
    // clap exits 2 on a usage error; in our table 2 means "changes pending", so bad input is 1.
    let cli = match beamops::cli::parse() {
        Ok(cli) => cli,
        Err(e) => {
            if !e.use_stderr() {
                // --help, --version: the text the person asked for, on stdout (a closed pipe
                // is an error clap returns, not a panic).
                let _ = e.print();
                std::process::exit(Exit::Ok.code());
            }
            let exit = Exit::Error;
            if beamops::cli::json_requested(std::env::args_os(), std::env::var_os("BEAMOPS_FORMAT"))
            {
                let report = serde_json::json!({
                    "error": e.render().to_string().trim_end().trim_start_matches("error: "),
                    "exit": exit.code(),
                    "kind": "usage",
                });
                let _ = output::write_stdout(format!("{report}\n").as_bytes());
            }
            let _ = e.print();
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
                let _ = output::write_stdout(format!("{report}\n").as_bytes());
            }
            output::write_stderr(&format!(
                "{} {err:#}\n",
                console::style("error:").red().bold()
            ));
            exit
        }
    };
    std::process::exit(code.code());
}
