//! The `BEAMOPS_*` environment variables that are not configuration overrides.
//!
//! Any other `BEAMOPS_*` variable is read as an override of a `beamops.yaml` key and must match
//! one (docs/config.md). This is the one list of the others, so that a variable beamops, its
//! tests or `.ci/run` set in the environment of every beamops run is never mistaken for a
//! misspelt key. docs/config.md lists the same names; a test checks both against the sources.

/// Exact names, with what each is for.
pub const VARIABLES: &[(&str, &str)] = &[
    ("BEAMOPS_PROJECT", "the `--project` flag"),
    ("BEAMOPS_ENV", "the `--env` flag"),
    ("BEAMOPS_FORMAT", "the `--format` flag"),
    ("BEAMOPS_COMPLETE", "set by the shell completion scripts"),
    (
        "BEAMOPS_AGE_KEY_FILE",
        "the age private key (docs/secrets.md)",
    ),
    (
        "BEAMOPS_REGISTRY_USERNAME",
        "registry login (docs/deploy.md)",
    ),
    (
        "BEAMOPS_REGISTRY_PASSWORD",
        "registry login (docs/deploy.md)",
    ),
    ("BEAMOPS_ROOT", "exported by `beamops env --shell`"),
    (
        "BEAMOPS_STATE_DIR",
        "exported by `beamops env --shell`; read by `coord`",
    ),
    ("BEAMOPS_BIN", "the beamops binary a `coord shim` runs"),
    (
        "BEAMOPS_CHAPTERS_DIR",
        "extra chapters (chapters/ + templates/) beside the embedded ones (docs/architecture.md)",
    ),
    ("BEAMOPS_RUN_ID", "names a CI run in lock records"),
    (
        "BEAMOPS_CACHE_DIR",
        "where built root filesystems are cached",
    ),
    (
        "BEAMOPS_DEBIAN_MIRROR",
        "the Debian mirror for built root filesystems",
    ),
    (
        "BEAMOPS_UID",
        "the user the development compose file runs as",
    ),
    (
        "BEAMOPS_GID",
        "the group the development compose file runs as",
    ),
    (
        "BEAMOPS_APP_IMAGE",
        "the stack file's app image (chapter 08)",
    ),
    (
        "BEAMOPS_RELEASE",
        "the stack file's release label (chapter 08)",
    ),
    ("BEAMOPS_GIT_SHA", "the stack file's git label (chapter 08)"),
    (
        "BEAMOPS_DEDUPE_PAUSE_AFTER",
        "tests: pause `dedupe --apply` to kill it",
    ),
    (
        "BEAMOPS_DOCKER_TESTS",
        "tests: run the Docker-backed tests (`.ci/run` exports it)",
    ),
    (
        "BEAMOPS_MULTINODE_TESTS",
        "tests: run the Docker-in-Docker tests (`.ci/run` exports it)",
    ),
    (
        "BEAMOPS_HEAVY_TESTS",
        "tests: run the long Docker scenarios (`.ci/run` exports it)",
    ),
    (
        "BEAMOPS_TERRAFORM_TESTS",
        "tests: run tests/terraform.rs with the tools .ci/setup installs",
    ),
    (
        "BEAMOPS_TERRAFORM_LOG",
        "lets TF_LOG* through to Terraform runs (docs/terraform.md): its logs may hold secrets",
    ),
    (
        "BEAMOPS_FUZZ_SEED",
        "tests: the configuration fuzz test's seed",
    ),
    (
        "BEAMOPS_FUZZ_ITERATIONS",
        "tests: the configuration fuzz test's length",
    ),
];

/// Prefixes of families of names (`BEAMOPS_SECRET_<KEY>`: the Docker secret the stack file uses).
pub const PREFIXES: &[&str] = &["BEAMOPS_SECRET_"];

/// Is `name` one of beamops's own variables rather than a configuration override?
pub fn is_beamops_variable(name: &str) -> bool {
    VARIABLES.iter().any(|(v, _)| *v == name) || PREFIXES.iter().any(|p| name.starts_with(p))
}
