//! Which release a converge of the stack rolls out: the stack variables `BEAMOPS_APP_IMAGE`,
//! `BEAMOPS_RELEASE` and `BEAMOPS_GIT_SHA`, decided here and nowhere else (docs/deploy.md,
//! "Which release a converge rolls out").
//!
//! Per variable, the first source with a value wins:
//! 1. **the deploy target**: the release `deploy` or `rollback` is rolling out (the engine's
//!    `stack_variables`), before it is recorded as live;
//! 2. **an exported variable** (`BEAMOPS_APP_IMAGE=…`), as for `docker stack deploy`;
//! 3. **the live service**: the app service's release labels and image on the swarm, the truth
//!    every machine shares (a laptop whose history is older than CI's must not roll production
//!    back by converging the stack);
//! 4. **this checkout's record**: the last successful deploy or rollback in `.beamops/state.json`;
//! 5. **the stack file's default** (`${BEAMOPS_APP_IMAGE:-<repository>:latest}`): the variable
//!    is left unset.
//!
//! The module sits above `swarm` (which reads the live service) and `deploy::record` (which
//! keeps the history), so neither needs the other: `swarm` never reaches into `deploy`.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::project::Project;
use crate::swarm::{APP_IMAGE_VARIABLE, GIT_SHA_VARIABLE, LiveRelease, RELEASE_VARIABLE};

/// The variables this module decides, in the order they are listed everywhere.
pub const VARIABLES: [&str; 3] = [APP_IMAGE_VARIABLE, RELEASE_VARIABLE, GIT_SHA_VARIABLE];

/// Where a variable's value came from, highest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    DeployTarget,
    Exported,
    Live,
    Recorded,
}

/// Everything the decision looks at; gathered by [`sources`], made up in tests.
#[derive(Debug, Default)]
pub struct Sources {
    pub target: BTreeMap<String, String>,
    pub exported: BTreeMap<String, String>,
    pub live: Option<LiveRelease>,
    pub recorded: Option<LiveRelease>,
}

fn value_of(release: &LiveRelease, name: &str) -> String {
    match name {
        APP_IMAGE_VARIABLE => release.image.clone(),
        RELEASE_VARIABLE => release.release.clone(),
        _ => release.git_sha.clone(),
    }
}

/// The precedence itself: each variable that has a value, with where it came from. A variable
/// absent here takes the stack file's default.
pub fn resolve(sources: &Sources) -> BTreeMap<&'static str, (String, Source)> {
    let mut out = BTreeMap::new();
    for name in VARIABLES {
        let found = sources
            .target
            .get(name)
            .map(|v| (v.clone(), Source::DeployTarget))
            .or_else(|| {
                sources
                    .exported
                    .get(name)
                    .map(|v| (v.clone(), Source::Exported))
            })
            .or_else(|| {
                sources
                    .live
                    .as_ref()
                    .map(|l| (value_of(l, name), Source::Live))
            })
            .or_else(|| {
                sources
                    .recorded
                    .as_ref()
                    .map(|r| (value_of(r, name), Source::Recorded))
            });
        if let Some(found) = found {
            out.insert(name, found);
        }
    }
    out
}

/// [`resolve`] as the stack file's variables.
pub fn variables(sources: &Sources) -> BTreeMap<String, String> {
    resolve(sources)
        .into_iter()
        .map(|(k, (v, _))| (k.to_string(), v))
        .collect()
}

/// The non-empty exported values of the release variables.
pub fn exported() -> BTreeMap<String, String> {
    VARIABLES
        .iter()
        .filter_map(|name| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (name.to_string(), v))
        })
        .collect()
}

/// The release this checkout last put live in `env` (its deploy history), as the swarm would
/// label it.
pub fn recorded(project: &Project, env: &str) -> Result<Option<LiveRelease>> {
    Ok(
        crate::deploy::record::live(project, env)?.map(|r| LiveRelease {
            release: r.release,
            git_sha: r.git_sha,
            image: r.image,
        }),
    )
}

/// Gathers the sources for a converge of `env`'s stack: `target` from the engine, the exported
/// variables, `live` as the caller read it from the swarm, and the recorded history.
pub fn sources(
    project: &Project,
    env: &str,
    target: &BTreeMap<String, String>,
    live: Option<LiveRelease>,
) -> Result<Sources> {
    Ok(Sources {
        target: target
            .iter()
            .filter(|(k, _)| VARIABLES.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        exported: exported(),
        live,
        recorded: recorded(project, env)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(n: &str) -> LiveRelease {
        LiveRelease {
            release: format!("r{n}-abc"),
            git_sha: format!("sha{n}"),
            image: format!("app:{n}"),
        }
    }

    fn image(sources: &Sources) -> Option<(String, Source)> {
        resolve(sources).get(APP_IMAGE_VARIABLE).cloned()
    }

    #[test]
    fn each_source_wins_over_every_one_below_it() {
        let target = BTreeMap::from([(APP_IMAGE_VARIABLE.to_string(), "app:target".to_string())]);
        let exported = BTreeMap::from([(APP_IMAGE_VARIABLE.to_string(), "app:env".to_string())]);
        let all = Sources {
            target: target.clone(),
            exported: exported.clone(),
            live: Some(release("live")),
            recorded: Some(release("rec")),
        };
        assert_eq!(
            image(&all),
            Some(("app:target".into(), Source::DeployTarget))
        );
        let no_target = Sources {
            target: BTreeMap::new(),
            ..all
        };
        assert_eq!(
            image(&no_target),
            Some(("app:env".into(), Source::Exported))
        );
        let no_env = Sources {
            exported: BTreeMap::new(),
            ..no_target
        };
        assert_eq!(image(&no_env), Some(("app:live".into(), Source::Live)));
        let no_live = Sources {
            live: None,
            ..no_env
        };
        assert_eq!(image(&no_live), Some(("app:rec".into(), Source::Recorded)));
        // Nothing at all: the stack file's own default applies.
        assert!(resolve(&Sources::default()).is_empty());
    }

    #[test]
    fn precedence_is_per_variable() {
        // A deploy names all three; an exported image alone leaves the live release's labels.
        let sources = Sources {
            exported: BTreeMap::from([(APP_IMAGE_VARIABLE.to_string(), "app:env".to_string())]),
            live: Some(release("7")),
            ..Default::default()
        };
        let vars = variables(&sources);
        assert_eq!(vars[APP_IMAGE_VARIABLE], "app:env");
        assert_eq!(vars[RELEASE_VARIABLE], "r7-abc");
        assert_eq!(vars[GIT_SHA_VARIABLE], "sha7");
    }

    #[test]
    fn a_live_release_beats_an_older_local_history() {
        // CI deployed r9; this laptop's history ends at r3: converging here keeps r9.
        let sources = Sources {
            live: Some(release("9")),
            recorded: Some(release("3")),
            ..Default::default()
        };
        assert_eq!(variables(&sources)[RELEASE_VARIABLE], "r9-abc");
    }
}
