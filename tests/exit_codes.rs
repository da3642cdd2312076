//! One severity order decides a report's exit code (src/exit.rs): a refused check is never
//! hidden behind a pending or blocked one, whichever command reports it.

mod common;

use common::example_copy;

/// A project whose chapter 07 check refuses: the age key would live inside the repository.
fn refused_project() -> (common::TestProject, String) {
    let p = example_copy("exitcodes");
    let key = p.file("secrets/age.key").display().to_string();
    (p, key)
}

#[test]
fn a_refused_check_is_exit_4_in_plan_and_dry_run_though_others_are_pending() {
    let (p, key) = refused_project();
    let before = p.snapshot(false);
    for args in [
        vec!["plan", "7"],
        vec!["plan", "7", "--format", "json"],
        vec!["up", "7", "--dry-run"],
    ] {
        let out = p
            .beamops()
            .args(&args)
            .env("BEAMOPS_AGE_KEY_FILE", &key)
            .env("PATH", common::tool_path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(4),
            "{args:?}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("inside the project"), "{args:?}: {text}");
    }
    // The refusal changed nothing, and no key was made inside the project.
    assert_eq!(before, p.snapshot(false));
    assert!(!p.file("secrets/age.key").exists());
}
