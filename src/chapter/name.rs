use anyhow::Result;

use super::{Manifest, all, find};

/// Whether `name`, as a user or a manifest's `needs:` writes it (`chapter-08`, `8`, `swarm`,
/// `08-swarm`), names the chapter `id`/`slug`. Pure: manifests check their `needs:` with it
/// while the chapter set itself is still loading, where `resolve` would re-enter that load.
pub fn names(name: &str, id: u8, slug: &str) -> bool {
    let wanted = name.trim().to_ascii_lowercase();
    let bare = wanted.strip_prefix("chapter-").unwrap_or(&wanted);
    let key = format!("{id:02}-{slug}");
    let number_part = bare.split('-').next().unwrap_or("");
    let as_number = number_part.parse::<u8>().ok();
    bare == slug || bare == key || (as_number == Some(id) && bare == number_part)
}

/// Accepts `chapter-08`, `08`, `8`, `swarm`, `08-swarm` and `chapter-08-swarm`.
pub fn resolve(name: &str) -> Result<&'static Manifest> {
    let wanted = name.trim().to_ascii_lowercase();
    // By the file name's id and slug alone: only the manifest named gets parsed.
    let found = find(|id, slug| names(name, id, slug));
    found.ok_or_else(|| {
        let names: Vec<String> = all().iter().map(|c| c.label()).collect();
        let candidates: Vec<String> = all()
            .iter()
            .flat_map(|c| [c.slug.clone(), c.key(), c.label()])
            .collect();
        let refs: Vec<&str> = candidates.iter().map(String::as_str).collect();
        let hint = crate::config::nearest_word(&wanted, &refs)
            .map(|n| format!("; did you mean `{n}`?"))
            .unwrap_or_default();
        anyhow::anyhow!(
            "unknown chapter `{name}`{hint}\n  valid chapters: {}\n  (also by number `8`, slug `swarm` or `08-swarm`)",
            names
                .iter()
                .zip(all().iter())
                .map(|(l, c)| format!("{l} ({})", c.slug))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_resolves() {
        for n in [
            "chapter-08",
            "08",
            "8",
            "swarm",
            "08-swarm",
            "chapter-08-swarm",
            "Chapter-08",
        ] {
            assert_eq!(resolve(n).unwrap().key(), "08-swarm", "{n}");
        }
    }

    #[test]
    fn unknown_names_suggest_the_nearest() {
        let e = resolve("swam").unwrap_err().to_string();
        assert!(e.contains("did you mean `swarm`"), "{e}");
        assert!(e.contains("chapter-12"), "{e}");
        assert!(resolve("13").is_err());
        assert!(resolve("08-docker").is_err());
    }
}
